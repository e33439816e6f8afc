"""Monitoring: `/metrics` for Prometheus, `/api/v1/monitoring/ws` sending a JSON snapshot every second,
and `/dashboard`, a page (no build step, no external assets) that draws that feed."""

from __future__ import annotations

import asyncio
from importlib import resources

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import HTMLResponse, Response

from sop_llm.api.deps import ServicesDep

router = APIRouter(tags=["monitoring"])  # under /api/v1
root = APIRouter(tags=["monitoring"])  # at the root

SNAPSHOT_INTERVAL = 1.0


@root.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@root.get("/dashboard")
async def dashboard() -> HTMLResponse:
    page = resources.files("sop_llm.api").joinpath("static/dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


@router.websocket("/monitoring/ws")
async def monitoring_ws(websocket: WebSocket) -> None:
    """One snapshot right away, then one every second until the client goes away."""
    services = websocket.app.state.services
    await websocket.accept()
    services.metrics.active += 1
    try:
        while True:
            await websocket.send_bytes(orjson.dumps(services.monitor.snapshot()))
            await asyncio.sleep(SNAPSHOT_INTERVAL)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away (RuntimeError: sending on a socket that just closed)
    finally:
        services.metrics.active -= 1
