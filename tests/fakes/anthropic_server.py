"""A fake Anthropic API on a free port, in a thread of the test process, speaking the real wire format.

`POST /v1/messages` answers JSON message objects or, with `stream: true`, Server-Sent Events (`message_start`,
`content_block_start`, `ping`, `content_block_delta` with `text_delta` / `input_json_delta`, `content_block_stop`,
`message_delta`, `message_stop`, and in-stream `error` events); `GET /v1/models` lists the models. Like the real
API it checks the key (`x-api-key`, or `Authorization: Bearer` as SDK 2.x sends it) and the `anthropic-version`
header, refuses malformed conversations (roles that do not alternate, empty text blocks, `tool_result` blocks
without their `tool_use`), and answers errors in Anthropic's shape.

Tests script the answers with `plan(Reply(...) | Failure(...), ...)` (used in order; with none planned a short text
answer is given) and read what was sent with `recorded()` / `messages()` (the key is not recorded).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_VERSION_HEADER = "anthropic-version"
DEFAULT_TEXT = "Hello from the fake Claude."


@dataclass
class Reply:
    """A planned assistant message. Streamed requests get the same message as events."""

    content: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    input_tokens: int = 12
    output_tokens: int = 7
    stream_error: str | None = None  # streaming: an `error` event of this type right after the first block's deltas
    cut_stream: bool = False  # streaming: the connection ends right after the first block's deltas, with no error
    delay: float = 0.0  # seconds before answering


@dataclass
class Failure:
    """A planned HTTP error in Anthropic's shape."""

    status: int
    type: str
    message: str = "planned failure"
    headers: dict[str, str] = field(default_factory=dict)


def text(answer: str, **kwargs: Any) -> Reply:
    return Reply([{"type": "text", "text": answer}], **kwargs)


def tool_use(name: str, arguments: dict[str, Any], call_id: str = "toolu_01", preamble: str | None = None) -> Reply:
    blocks = [{"type": "text", "text": preamble}] if preamble else []
    blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
    return Reply(blocks, stop_reason="tool_use")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{uuid.uuid4().hex}"}
    return web.json_response(body, status=status, headers={"request-id": body["request_id"], **(headers or {})})


def _conversation_problem(body: dict[str, Any]) -> str | None:
    """What the real API would refuse in the request body, or None."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if not 0 <= body.get("temperature", 1) <= 1:
        return "temperature: Input should be less than or equal to 1"
    previous: dict[str, Any] | None = None
    uses_tools = False
    for i, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if previous is not None and previous["role"] == message["role"]:
            return 'messages: roles must alternate between "user" and "assistant"'
        blocks = message["content"] if isinstance(message.get("content"), list) else []
        known = {b.get("id") for b in (previous or {}).get("content", []) if b.get("type") == "tool_use"}
        for block in blocks:
            uses_tools |= block.get("type") in ("tool_use", "tool_result")
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in known:
                return (
                    f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: {block.get('tool_use_id')}. "
                    "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                )
        previous = message if isinstance(message.get("content"), list) else {"role": message["role"], "content": []}
    if uses_tools and not body.get("tools"):
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    return None


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _pieces(value: str, size: int = 0) -> list[str]:
    """Words with their spaces, or fixed-size fragments: how the real API splits deltas."""
    if size:
        return [value[i : i + size] for i in range(0, len(value), size)]
    return re.findall(r"\S+\s*|\s+", value)


class FakeAnthropic:
    def __init__(self, api_key: str = "test-key", model_ids: tuple[str, ...] = ("claude-test",)) -> None:
        self.api_key = api_key
        self.model_ids = model_ids
        self.requests: list[Recorded] = []
        self.models_failure: Failure | None = None
        self._plans: deque[Reply | Failure] = deque()
        self._lock = threading.Lock()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"fake-anthropic-{self.port}", daemon=True)
        self._runner: web.AppRunner | None = None

    # -- test API ---------------------------------------------------------------------------------------
    def plan(self, *answers: Reply | Failure) -> None:
        with self._lock:
            self._plans.extend(answers)

    def reset(self) -> None:
        with self._lock:
            self._plans.clear()
            self.requests.clear()
            self.models_failure = None

    def recorded(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def messages(self) -> list[dict[str, Any]]:
        """The bodies sent to POST /v1/messages, in order."""
        return [r.body for r in self.recorded("/v1/messages")]

    def start(self) -> FakeAnthropic:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        self._thread.start()
        self._runner = web.AppRunner(app, access_log=None)
        asyncio.run_coroutine_threadsafe(self._serve(self._runner), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._socket.close()

    async def _serve(self, runner: web.AppRunner) -> None:
        await runner.setup()
        await web.SockSite(runner, self._socket).start()

    # -- handlers ---------------------------------------------------------------------------------------
    def _refuse_headers(self, request: web.Request) -> web.Response | None:
        # The API takes the key as `x-api-key` or, as SDK 2.x sends it, `Authorization: Bearer <key>`.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get(API_VERSION_HEADER):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    async def _record(self, request: web.Request, body: Any) -> None:
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in ("x-api-key", "authorization")}
        with self._lock:
            self.requests.append(Recorded(request.method, request.path, dict(request.query), headers, body))

    def _next(self) -> Reply | Failure:
        with self._lock:
            return self._plans.popleft() if self._plans else text(DEFAULT_TEXT)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, None)
        refused = self._refuse_headers(request)
        if refused is not None:
            return refused
        if self.models_failure is not None:
            failure = self.models_failure
            return _error(failure.status, failure.type, failure.message, failure.headers)
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in self.model_ids
        ]
        limit = int(request.query.get("limit", 20))
        data = data[:limit]
        return web.json_response(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "the request body is not valid JSON")
        await self._record(request, body)
        refused = self._refuse_headers(request)
        if refused is not None:
            return refused
        problem = _conversation_problem(body)
        if problem is not None:
            return _error(400, "invalid_request_error", problem)
        answer = self._next()
        if isinstance(answer, Failure):
            return _error(answer.status, answer.type, answer.message, answer.headers)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": answer.content,
            "stop_reason": answer.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
        }
        if not body.get("stream"):
            return web.json_response(message, headers={"request-id": f"req_{uuid.uuid4().hex}"})
        return await self._stream(request, message, answer)

    async def _stream(self, request: web.Request, message: dict[str, Any], answer: Reply) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": 1},
        }
        await response.write(_sse({"type": "message_start", "message": start}))
        for index, block in enumerate(answer.content):
            if block["type"] == "text":
                opening, deltas = (
                    {"type": "text", "text": ""},
                    [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])],
                )
            else:
                opening = {**block, "input": {}}
                fragments = ["", *_pieces(json.dumps(block["input"]), 7)]  # the real API opens with ""
                deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
            await response.write(_sse({"type": "content_block_start", "index": index, "content_block": opening}))
            if index == 0:
                await response.write(_sse({"type": "ping"}))
            for delta in deltas:
                await response.write(_sse({"type": "content_block_delta", "index": index, "delta": delta}))
            if answer.stream_error is not None:
                error = {"type": "error", "error": {"type": answer.stream_error, "message": "Overloaded"}}
                await response.write(_sse(error))
                return response
            if answer.cut_stream:
                return response
            await response.write(_sse({"type": "content_block_stop", "index": index}))
        delta = {"stop_reason": answer.stop_reason, "stop_sequence": None}
        await response.write(
            _sse({"type": "message_delta", "delta": delta, "usage": {"output_tokens": answer.output_tokens}})
        )
        await response.write(_sse({"type": "message_stop"}))
        return response
