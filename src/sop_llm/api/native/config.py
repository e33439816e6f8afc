"""Reload the configuration files without a restart (admin scope); `sop-llm config reload` and SIGHUP do the same."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import ConfigReloaded
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.request_state import require_admin
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import BadRequestError
from sop_llm.infra.model_config import ConfigError

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)], responses=NATIVE_ERRORS)


@router.post("/config/reload", responses=answers(ConfigReloaded, "What the reload changed"))
async def reload_config(services: ServicesDep) -> Response:
    """Models served by remote providers (their deployments, strategy, aliases, fallbacks) change at once; requests
    in flight finish where they started. What needs a restart is listed as such."""
    try:
        reloaded = await services.reloader.reload()
    except ConfigError as exc:
        raise BadRequestError(f"the configuration was not reloaded (nothing changed): {exc}") from exc
    return json_response(reloaded.describe())
