"""The ceiling for a Python gateway here: a Starlette app that only forwards the body with one shared aiohttp
session (SPEC §11). Run by bench/gateway.py with UPSTREAM set to the mock's base URL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8080/v1")
session: aiohttp.ClientSession


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global session
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    yield
    await session.close()


async def forward(request: Request) -> Response:
    body = await request.body()
    async with session.post(
        f"{UPSTREAM}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    ) as r:
        return Response(await r.read(), status_code=r.status, media_type="application/json")


app = Starlette(routes=[Route("/v1/chat/completions", forward, methods=["POST"])], lifespan=lifespan)
