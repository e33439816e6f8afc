"""A scripted OpenAI-compatible upstream for fallback, retry, circuit and cancellation tests.

The upstream model id picks the behaviour (`ok`, `fail-500`, `fail-429`, `slow`, `sleep-<ms>`, `midstream`, ...); a
test can also switch a model's behaviour at run time with `set_mode`. Every request is recorded, and the most
requests it ever held at once (`peak`). Runs an aiohttp server
on its own event loop in a thread, so it works beside the live service and synchronous tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from typing import Any

from aiohttp import web

ANSWER = "fake answer"


class FakeOpenAI:
    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()  # (path, model) -> count
        self.aborted: Counter[str] = Counter()  # model -> requests whose client went away mid-answer
        self.modes: dict[str, str] = {}
        self.in_flight = 0
        self.peak = 0  # the most chat requests in flight at once
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-openai")
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def set_mode(self, model: str, mode: str) -> None:
        self.modes[model] = mode

    def count(self, model: str, path: str = "/v1/chat/completions") -> int:
        return self.calls[(path, model)]

    def served(self) -> int:
        """Chat requests received, whatever their model."""
        return sum(count for (path, _), count in self.calls.items() if path == "/v1/chat/completions")

    def start(self) -> FakeOpenAI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _models(self, request: web.Request) -> web.Response:
        self.calls[("/v1/models", "")] += 1
        return web.json_response({"object": "list", "data": [{"id": "ok", "object": "model", "owned_by": "fake"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        self.calls[("/v1/chat/completions", model)] += 1
        mode = self.modes.get(model, model)
        if mode.startswith("sleep-"):
            await asyncio.sleep(int(mode.split("-")[1]) / 1000)
            mode = "ok"
        if mode.startswith("fail-"):
            return _error(mode)
        if mode == "slow":
            return await self._slow(request, model)
        if body.get("stream"):
            return await self._stream(request, model, mode)
        return web.json_response(_completion(model, body.get("max_tokens")))

    async def _slow(self, request: web.Request, model: str) -> web.Response:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if request.transport is None or request.transport.is_closing():
                self.aborted[model] += 1
                return web.Response(status=499)
            await asyncio.sleep(0.02)
        return web.json_response(_completion(model))

    async def _stream(self, request: web.Request, model: str, mode: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces = 200 if mode == "slow-stream" else 3
        try:
            for i in range(pieces):
                delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f"part{i} "}
                await response.write(_sse(_chunk(model, delta, None)))
                if mode == "midstream" and i == 1:
                    error = {"error": {"message": "upstream fell over", "type": "server_error", "code": None}}
                    await response.write(_sse(error))
                    return response
                if mode == "slow-stream":
                    await asyncio.sleep(0.05)
            await response.write(_sse(_chunk(model, {}, "stop")))
            usage = {"prompt_tokens": 5, "completion_tokens": pieces, "total_tokens": 5 + pieces}
            await response.write(_sse({**_chunk(model, {}, None), "choices": [], "usage": usage}))
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, ConnectionError):
            self.aborted[model] += 1
        return response


def _error(mode: str) -> web.Response:
    status = int(mode.split("-")[1])
    headers = {}
    if status == 429:
        headers["retry-after"] = "120" if mode.endswith("-long") else "0.05"
    body = {"error": {"message": f"scripted {status}", "type": "server_error", "param": None, "code": None}}
    return web.json_response(body, status=status, headers=headers)


def _completion(model: str, max_tokens: int | None = None) -> dict[str, Any]:
    """Five prompt tokens and two of answer, or fewer if `max_tokens` says so (as a real server would)."""
    completion = min(2, max_tokens or 2)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": completion, "total_tokens": 5 + completion},
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"
