"""The console's page and its static files, from the package (`static/console/`): one HTML shell, its style sheet
and one small JavaScript module per page. Public, since they hold no data; the data comes from the JSON APIs."""

from __future__ import annotations

import re
from importlib import resources

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from sop_llm.api.console.headers import SECURITY_HEADERS
from sop_llm.infra.errors import NotFoundError

# Left out of /openapi.json: pages, not an API (docs/console.md describes them).
router = APIRouter(include_in_schema=False)

MEDIA_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
_STATIC_NAME = re.compile(r"[a-z][a-z0-9-]*\.(js|css)")


def _read(name: str) -> bytes:
    return resources.files("sop_llm.api").joinpath("static/console", name).read_bytes()


@router.get("/console")
async def console_root() -> Response:
    return RedirectResponse("/console/", status_code=307, headers=SECURITY_HEADERS)


@router.get("/console/")
async def console_page() -> Response:
    """The admin console: one page, its views behind `#/` routes."""
    return Response(
        _read("index.html"),
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


@router.get("/console/static/{name}")
async def console_static(name: str) -> Response:
    """One of the console's scripts or its style sheet."""
    match = _STATIC_NAME.fullmatch(name)
    if match is None:
        raise NotFoundError(f"the console has no file '{name}'")
    try:
        body = _read(name)
    except FileNotFoundError as exc:
        raise NotFoundError(f"the console has no file '{name}'") from exc
    return Response(
        body, media_type=MEDIA_TYPES[match.group(1)], headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    )
