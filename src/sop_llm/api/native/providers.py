from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from sop_llm.api.deps import ServicesDep
from sop_llm.api.responses import json_response

router = APIRouter(tags=["providers"])


@router.get("/providers")
async def providers(services: ServicesDep) -> Response:
    """Every deployment: cached health (never a generation call), circuit state and routing counters."""
    return json_response({"providers": services.deployments.describe()})
