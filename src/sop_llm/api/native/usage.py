"""Usage and budgets. `GET /usage`: a caller's own usage per model and day (admins: everyone's, filtered by
subject, model and date range), as JSON or CSV. Budgets (admin scope): list, set, remove."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import Budget, BudgetRemoved, Budgets, UsageReport
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.request_state import principal_of, require_admin
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import BadRequestError, ForbiddenError
from sop_llm.services.usage.meter import ANONYMOUS_SUBJECT
from sop_llm.services.usage.model import EVERY_MODEL

router = APIRouter(tags=["usage"], responses=NATIVE_ERRORS)
admin = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)], responses=NATIVE_ERRORS)

CSV_COLUMNS = (
    "day",
    "subject",
    "model",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "avg_latency_ms",
)
TOTAL_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens")


@router.get(
    "/usage",
    responses={
        200: {
            "model": UsageReport,
            "description": "Rows per caller, model and day, with totals; `format=csv`: the rows as CSV",
            "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}},  # the model's, then CSV
        }
    },
)
async def usage(
    request: Request,
    services: ServicesDep,
    subject: Annotated[str | None, Query(max_length=160, description="admins only: one caller (`key:<id>`)")] = None,
    key_id: Annotated[str | None, Query(max_length=36, description="admins only: one API key by id")] = None,
    model: Annotated[str | None, Query(max_length=160)] = None,
    since: Annotated[date | None, Query(alias="from", description="first day (UTC), inclusive")] = None,
    until: Annotated[date | None, Query(alias="to", description="last day (UTC), inclusive")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    principal = principal_of(request)
    if key_id is not None:
        subject = f"key:{key_id}"
    if principal.subject is not None and not principal.admin:
        if subject not in (None, principal.subject):
            raise ForbiddenError("only an admin can read another caller's usage; omit `subject` to read your own")
        subject = principal.subject
    if since is not None and until is not None and since > until:
        raise BadRequestError("`from` is after `to`; give the earlier day first", param="from")
    rows = await services.usage.report(subject, model, since, until)
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return Response(
            buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
        )
    totals = {name: sum(row[name] for row in rows) for name in TOTAL_FIELDS}
    return json_response({"object": "usage", "data": rows, "totals": totals})


class BudgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(None, min_length=1, max_length=160, description="`key:<id>` or `jwt:<sub>`")
    key_id: str | None = Field(None, min_length=1, max_length=36, description="an API key's id (instead of subject)")
    model: str = Field(EVERY_MODEL, min_length=1, max_length=160, description="a model name; `*` for every model")
    tokens_per_day: int | None = Field(None, ge=1, le=10**15)
    tokens_per_month: int | None = Field(None, ge=1, le=10**15)

    @model_validator(mode="after")
    def _one_caller(self) -> BudgetBody:
        if (self.subject is None) == (self.key_id is None):
            raise ValueError("give either `subject` or `key_id`")
        return self

    def caller(self) -> str:
        return self.subject or f"key:{self.key_id}"


def _budget_subject(subject: str) -> str:
    if subject == ANONYMOUS_SUBJECT:
        raise BadRequestError("budgets apply to API keys and token subjects; auth is what tells callers apart")
    return subject


@admin.get("/admin/budgets", responses=answers(Budgets, "Every budget (or one caller's), with what is used"))
async def list_budgets(services: ServicesDep, subject: Annotated[str | None, Query(max_length=160)] = None) -> Response:
    return json_response({"budgets": await services.budgets.describe(subject)})


@admin.put("/admin/budgets", responses=answers(Budget, "The budget as it now is"))
async def set_budget(body: BudgetBody, services: ServicesDep) -> Response:
    subject = _budget_subject(body.caller())
    await services.budgets.set(subject, body.model, body.tokens_per_day, body.tokens_per_month)
    views: list[dict[str, Any]] = await services.budgets.describe(subject)
    return json_response(next(view for view in views if view["model"] == body.model))


@admin.delete("/admin/budgets", responses=answers(BudgetRemoved, "The budget is gone"))
async def remove_budget(
    services: ServicesDep,
    subject: Annotated[str, Query(min_length=1, max_length=160)],
    model: Annotated[str, Query(min_length=1, max_length=160)] = EVERY_MODEL,
) -> Response:
    await services.budgets.remove(subject, model)
    return json_response({"subject": subject, "model": model, "deleted": True})
