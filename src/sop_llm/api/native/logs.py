"""The request log: `GET /logs` searches it (newest first, a page at a time), `GET /logs/{id}` shows one request.
Admins see every caller's requests; any other caller sees its own only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import LogEntryDetail, LogPage
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.request_state import principal_of
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import BadRequestError, ForbiddenError, NotFoundError
from sop_llm.services.auth.principal import Principal
from sop_llm.services.logs.search import STATUS, LogFilter, log_view

router = APIRouter(tags=["logs"], responses=NATIVE_ERRORS)


def _own(principal: Principal, subject: str | None) -> str | None:
    """The subject a caller may search: anyone (admins), else only its own."""
    if principal.admin:
        return subject
    if subject not in (None, principal.subject):
        raise ForbiddenError("only an admin can read another caller's requests; omit `subject` to read your own")
    return principal.subject


@router.get("/logs", responses=answers(LogPage, "A page of the request log, newest first"))
async def search_logs(
    request: Request,
    services: ServicesDep,
    subject: Annotated[str | None, Query(max_length=160, description="one caller (`key:<id>`); admins only")] = None,
    key_id: Annotated[str | None, Query(max_length=36, description="one API key by id; admins only")] = None,
    model: Annotated[str | None, Query(max_length=160)] = None,
    status: Annotated[
        str | None, Query(pattern=STATUS.pattern, description="a code (`429`), a class (`4xx`) or `error` (≥ 400)")
    ] = None,
    since: Annotated[datetime | None, Query(alias="from", description="earliest arrival (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="latest arrival (ISO 8601)")] = None,
    before: Annotated[str | None, Query(max_length=48, description="the previous page's `next`")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    if key_id is not None:
        subject = f"key:{key_id}"
    if since is not None and until is not None and since > until:
        raise BadRequestError("`from` is after `to`; give the earlier time first", param="from")
    wanted = LogFilter(_own(principal_of(request), subject), model, status, since, until, before, limit)
    rows, cursor = await services.log_search.search(wanted)
    return json_response({"object": "list", "data": rows, "has_more": cursor is not None, "next": cursor})


@router.get("/logs/{log_id}", responses=answers(LogEntryDetail, "One request, with its bodies when they were kept"))
async def show_log(
    log_id: Annotated[int, Path(ge=1, le=2**63 - 1)], request: Request, services: ServicesDep
) -> Response:
    row = await services.log_search.get(log_id)
    if row is None:
        raise NotFoundError(f"no request log entry {log_id}; it may be older than the retention", param="log_id")
    principal = principal_of(request)
    if not principal.admin and row.subject != principal.subject:
        raise ForbiddenError("only an admin can read another caller's requests")
    return json_response(log_view(row, bodies=True))
