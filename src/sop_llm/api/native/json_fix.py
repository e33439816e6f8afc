from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import FixedJson, JsonStats
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.responses import json_response
from sop_llm.services.payloads import FixBody

router = APIRouter(tags=["json"], responses=NATIVE_ERRORS)


@router.post("/json/fix", responses=answers(FixedJson, "The JSON value and how it was obtained"))
async def fix_json(body: FixBody, services: ServicesDep) -> Response:
    """The JSON pipeline on its own: parse, repair locally, validate, then ask the fixer model."""
    fixer = services.structured.fixer
    fixer.check_schema(body.schema_)
    outcome = await fixer.resolve(body.text, body.schema_, fixer_model=body.model)
    return json_response(
        {
            "value": outcome.value,
            "text": outcome.text,
            "provenance": outcome.provenance,
            "attempts": outcome.attempts,
            "history": [attempt.describe() for attempt in outcome.history],
        }
    )


@router.get("/json/stats", responses=answers(JsonStats, "Counts per outcome"))
async def json_stats(services: ServicesDep) -> Response:
    """How JSON answers were obtained since start: parsed, repaired_locally, fixed_by_model, failed."""
    counts = services.structured.fixer.outcomes
    return json_response({k: counts.get(k, 0) for k in ("parsed", "repaired_locally", "fixed_by_model", "failed")})
