"""A simulated OpenAI-compatible inference node, in its own process: the routing benchmark's upstream.

A node processes `capacity` requests at once; the others wait their turn in arrival order (FIFO). A request that
holds a slot takes `ttft_ms` + max_tokens × `per_token_ms`: streamed, its first token comes `ttft_ms` +
`per_token_ms` after it got the slot and each further one `per_token_ms` later; otherwise the whole answer comes at
the end. It answers `POST /v1/chat/completions` (plain, and `stream: true` as SSE with a final usage chunk when
`stream_options.include_usage` asks for it) and `GET /v1/models` on OpenAI's wire format, and `GET /stats` with its
counters. A client that goes away frees its slot or its place in the queue, as a real server's abort would.

`SimNode` runs one from the benchmark: `start()`, `kill()` (SIGKILL: new connections are refused, open ones reset)
and `start()` again on the same port. Run alone: `python -m bench.sim_node --port 9001 --capacity 4 --per-token-ms 2`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bench.service import free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sim"
DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True)
class NodeSpec:
    name: str
    capacity: int  # requests processed at once; the rest queue FIFO
    per_token_ms: float  # per output token, once a request holds a slot
    ttft_ms: float = 0.0  # before the first token (the prompt's prefill)

    def seconds(self, max_tokens: int) -> float:
        """What one request of `max_tokens` output tokens takes once it holds a slot."""
        return (self.ttft_ms + max_tokens * self.per_token_ms) / 1000

    def requests_per_s(self, max_tokens: int) -> float:
        """The node's throughput with every slot busy."""
        return self.capacity / self.seconds(max_tokens)


class Slots:
    """`capacity` slots handed out strictly in arrival order (asyncio.Semaphore lets a newcomer overtake a waiter
    that was just woken)."""

    def __init__(self, capacity: int) -> None:
        self.free = capacity
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.free and not self.waiting:
            self.free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a slot in the same instant the client went away: pass it on
            elif turn in self.waiting:  # `release` drops cancelled turns it comes across
                self.waiting.remove(turn)
            raise

    def release(self) -> None:
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.free += 1


class Node:
    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.slots = Slots(spec.capacity)
        self.received = 0  # chat requests that arrived
        self.served = 0  # chat requests answered to the end
        self.active = 0  # holding a slot

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.stats)
        return app

    async def stats(self, request: web.Request) -> web.Response:
        waiting = len(self.slots.waiting)
        counters = {"received": self.received, "served": self.served, "active": self.active, "waiting": waiting}
        return web.json_response({"name": self.spec.name, **counters})

    async def models(self, request: web.Request) -> web.Response:
        model = {"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "bench"}
        return web.json_response({"object": "list", "data": [model]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received += 1
        tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS)
        reply = _Reply(str(body.get("model", MODEL)), _prompt_tokens(body.get("messages", [])), tokens)
        await self.slots.acquire()
        self.active += 1
        try:
            if body.get("stream"):
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                response = await self._stream(request, reply, usage)
            else:
                await asyncio.sleep(self.spec.seconds(tokens))
                response = web.json_response(reply.completion())
        finally:
            self.active -= 1
            self.slots.release()
        self.served += 1
        return response

    async def _stream(self, request: web.Request, reply: _Reply, usage: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await response.write(_sse(reply.chunk({"role": "assistant", "content": ""})))
        for i in range(1, reply.tokens + 1):
            due = started + (self.spec.ttft_ms + i * self.spec.per_token_ms) / 1000
            await asyncio.sleep(max(0.0, due - loop.time()))
            await response.write(_sse(reply.chunk({"content": f"{WORDS[i % len(WORDS)]} "})))
        await response.write(_sse(reply.chunk({}, "length")))
        if usage:
            await response.write(_sse({**reply.chunk({}), "choices": [], "usage": reply.usage()}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


WORDS = ["the", "node", "answers", "with", "simulated", "tokens", "at", "its", "own", "pace"]


class _Reply:
    """One answer's wire shapes: max_tokens tokens, so `finish_reason` is "length"."""

    def __init__(self, model: str, prompt_tokens: int, tokens: int) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.tokens = tokens

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.tokens, "total_tokens": total}

    def completion(self) -> dict[str, Any]:
        text = " ".join(WORDS[i % len(WORDS)] for i in range(1, self.tokens + 1))
        message = {"role": "assistant", "content": text, "refusal": None}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "length"}],
            "usage": self.usage(),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """About four characters a token, as English text has with the usual tokenizers."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return max(1, chars // 4)


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class SimNode:
    """One simulated node as a child process of the benchmark."""

    def __init__(self, spec: NodeSpec, port: int | None = None) -> None:
        self.spec = spec
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> SimNode:
        spec = self.spec
        command = [sys.executable, "-m", "bench.sim_node", "--port", str(self.port), "--name", spec.name]
        command += ["--capacity", str(spec.capacity), "--per-token-ms", str(spec.per_token_ms)]
        command += ["--ttft-ms", str(spec.ttft_ms)]
        self._process = subprocess.Popen(command, cwd=ROOT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return self
            except httpx.TransportError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sim node {spec.name} did not start on port {self.port}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """Gone at once, as a crashed machine: nothing answers on its port until `start()`."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
        self._process = None

    def stats(self) -> dict[str, Any]:
        reply = httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5)
        reply.raise_for_status()
        counters: dict[str, Any] = reply.json()
        return counters

    async def astats(self, client: httpx.AsyncClient) -> dict[str, Any]:
        reply = await client.get(f"http://127.0.0.1:{self.port}/stats", timeout=5)
        reply.raise_for_status()
        counters: dict[str, Any] = reply.json()
        return counters

    def __enter__(self) -> SimNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="node")
    parser.add_argument("--capacity", type=int, default=1)
    parser.add_argument("--per-token-ms", type=float, default=1.0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    args = parser.parse_args()
    node = Node(NodeSpec(args.name, args.capacity, args.per_token_ms, args.ttft_ms))
    # handler_cancellation: a client that disconnects cancels its handler (aiohttp's default lets it run on).
    web.run_app(
        node.app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        handler_cancellation=True,
        reuse_address=True,
        shutdown_timeout=1.0,
    )


if __name__ == "__main__":
    main()
