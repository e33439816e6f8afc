"""Monitoring: `/metrics` for Prometheus, `/api/v1/monitoring/ws` sending a JSON snapshot every second,
and `/dashboard`, a page (no build step, no external assets) that draws that feed. With auth on, the feed and
/metrics need the admin scope (unless METRICS_PUBLIC); the page gets a single-use ticket from
`POST /api/v1/monitoring/ticket` to open the WebSocket with."""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import HTMLResponse, Response

from sop_llm.api.console.headers import SECURITY_HEADERS
from sop_llm.api.contracts import answers, raw_answer
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import Ticket
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.request_state import principal_of
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import ForbiddenError
from sop_llm.services.auth.tickets import TICKET_SECONDS
from sop_llm.services.container import Services
from sop_llm.services.usage.meter import today

router = APIRouter(tags=["monitoring"], responses=NATIVE_ERRORS)  # under /api/v1
root = APIRouter(tags=["monitoring"], responses=NATIVE_ERRORS)  # at the root

SNAPSHOT_INTERVAL = 1.0
USAGE_INTERVAL = 5.0  # today's usage totals (read from the database) are refreshed this often
USAGE_TOP = 10
# The WebSocket subprotocol the dashboard speaks (a `bearer.<key or JWT>` beside it is auth's; middleware/auth.py).
WS_PROTOCOL = "sop-llm"


@root.get(
    "/metrics", response_class=Response, responses=raw_answer("text/plain", "The metrics in Prometheus' text format")
)
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@root.get("/dashboard", response_class=Response, responses=raw_answer("text/html", "The dashboard page"))
async def dashboard() -> HTMLResponse:
    page = resources.files("sop_llm.api").joinpath("static/dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.post("/monitoring/ticket", responses=answers(Ticket, "A single-use ticket"))
async def ticket(request: Request, services: ServicesDep) -> Response:
    """A ticket good for opening one monitoring WebSocket (`?ticket=…`) within 30 seconds."""
    principal = principal_of(request)
    if not principal.admin and not services.settings.metrics_open:
        raise ForbiddenError("monitoring data needs an admin API key or a token with the admin scope")
    issued = await services.auth.tickets.issue(principal)
    return json_response({"ticket": issued, "expires_in": TICKET_SECONDS})


async def _usage_today(services: Services) -> dict[str, Any]:
    rows = await services.usage.report(since=today())
    callers: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = callers.setdefault(row["subject"], {"requests": 0, "errors": 0, "tokens": 0})
        entry["requests"] += row["requests"]
        entry["errors"] += row["errors"]
        entry["tokens"] += row["total_tokens"]
    top = sorted(callers.items(), key=lambda item: -item[1]["tokens"])[:USAGE_TOP]
    return {
        "day": today().isoformat(),
        "requests": sum(entry["requests"] for entry in callers.values()),
        "tokens": sum(entry["tokens"] for entry in callers.values()),
        "callers": [{"subject": subject, **entry} for subject, entry in top],
    }


@router.websocket("/monitoring/ws")
async def monitoring_ws(websocket: WebSocket) -> None:
    """One snapshot right away, then one every second until the client goes away."""
    services: Services = websocket.app.state.services
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=WS_PROTOCOL if WS_PROTOCOL in offered else None)
    services.metrics.active += 1
    usage: dict[str, Any] | None = None
    usage_at = 0.0
    try:
        while True:
            if time.monotonic() - usage_at >= USAGE_INTERVAL:
                usage_at = time.monotonic()
                try:
                    usage = await _usage_today(services)
                except (SQLAlchemyError, OSError, TimeoutError) as exc:
                    logger.warning("dashboard: usage totals unavailable ({!r})", exc)
            await websocket.send_bytes(orjson.dumps({**services.monitor.snapshot(), "usage": usage}))
            await asyncio.sleep(SNAPSHOT_INTERVAL)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away (RuntimeError: sending on a socket that just closed)
    finally:
        services.metrics.active -= 1
