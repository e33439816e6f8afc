from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.responses import Response

from sop_llm import __version__
from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import HealthReport, Readiness
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.responses import json_response

router = APIRouter(tags=["health"], responses=NATIVE_ERRORS)


@router.get("/health", responses=answers(HealthReport, "The service runs"))
async def health(services: ServicesDep) -> Response:
    """Liveness with component detail. Answers as soon as the process runs; models may still be loading."""
    ready, states = services.ready()
    return json_response(
        {
            "status": "ok",
            "ready": ready,
            "app": services.settings.app_name,
            "version": __version__,
            "environment": services.settings.environment,
            "uptime_seconds": round(time.time() - services.started_at, 3),
            "components": {
                "models": states,
                "cache": {"backend": services.cache.backend, **vars(services.cache.stats)},
                "rate_limits": {
                    "enabled": services.limiter.enabled,
                    "redis_failures": services.limiter.redis_failures,
                },
                "providers": {
                    d["name"]: {"healthy": d["health"]["ok"], "circuit": d["circuit"]["state"]}
                    for d in services.deployments.describe()
                },
            },
        }
    )


@router.get(
    "/health/ready",
    responses={
        **answers(Readiness, "Every startup model serves"),
        503: {"model": Readiness, "description": "A startup model does not serve yet (each one's state)"},
    },
)
async def ready(services: ServicesDep) -> Response:
    """200 when the startup models are loaded, else 503 with each model's state."""
    is_ready, states = services.ready()
    return json_response({"ready": is_ready, "models": states}, 200 if is_ready else 503)
