from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import ProviderList
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.responses import json_response

router = APIRouter(tags=["providers"], responses=NATIVE_ERRORS)


@router.get("/providers", responses=answers(ProviderList, "Every deployment"))
async def providers(services: ServicesDep) -> Response:
    """Every deployment: cached health (never a generation call), circuit state and routing counters."""
    return json_response({"providers": services.deployments.describe()})
