"""Provider chunks → Ollama's answer objects, the same for a stream and a whole answer (which is the stream's objects
put together, as Ollama itself does):

    {"model", "created_at", "message": {"role": "assistant", "content": "<piece>"}, "done": false}   /api/chat
    {"model", "created_at", "response": "<piece>", "done": false}                                   /api/generate
    … one per piece of text (with `logprobs` when asked); then, on /api/chat, one with the complete
    `message.tool_calls` (`arguments` an object) when the model called tools; then the last:
    {…, "done": true, "done_reason": "stop" | "length", "total_duration", "load_duration", "prompt_eval_count",
     "prompt_eval_duration", "eval_count", "eval_duration"}

Durations are nanoseconds measured by the service: `prompt_eval_duration` from the request's arrival to the first
piece (routing, waiting for a slot and reading the prompt), `eval_duration` from the first piece to the last;
`load_duration` is 0 (models are loaded before they serve). The counts are the generation's own usage.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sop_llm.api.ollama.timestamps import now
from sop_llm.api.openai.logprobs import chat_logprobs
from sop_llm.infra.errors import ProviderError
from sop_llm.providers.types import Chunk, FinishReason, TokenLogprob, Usage


@dataclass
class Reply:
    """What every object of one answer shares, and its clock."""

    model: str  # as the client named it (or the fallback that answered)
    chat: bool  # /api/chat (a `message`) or /api/generate (a `response`)
    started_ns: int  # time.perf_counter_ns() when the request arrived
    first_ns: int | None = None
    json_text: str | None = None  # the JSON pipeline's reading of the answer, where it differs from what was sent

    def frame(self, text: str, done: bool = False) -> dict[str, Any]:
        frame: dict[str, Any] = {"model": self.model, "created_at": now()}
        if self.chat:
            frame["message"] = {"role": "assistant", "content": text}
        else:
            frame["response"] = text
        frame["done"] = done
        return frame


@dataclass
class _Calls:
    """OpenAI-style tool-call deltas (`index`, `id` and name once, then `arguments` fragments), put together."""

    calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, delta: dict[str, Any]) -> None:
        call = self.calls.setdefault(delta.get("index", len(self.calls)), {"id": None, "name": None, "arguments": ""})
        function = delta.get("function") or {}
        call["id"] = call["id"] or delta.get("id")
        call["name"] = call["name"] or function.get("name")
        call["arguments"] += function.get("arguments") or ""

    def ollama(self, model: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for index in sorted(self.calls):
            call = self.calls[index]
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = None
            if not isinstance(arguments, dict):
                raise ProviderError(f"'{model}' called '{call['name']}' with arguments that are not a JSON object")
            function = {"index": len(out), "name": call["name"], "arguments": arguments}
            out.append({"id": call["id"], "function": function} if call["id"] else {"function": function})
        return out


def _logprobs(tokens: list[TokenLogprob]) -> list[dict[str, Any]]:
    shaped = chat_logprobs(tokens)
    assert shaped is not None
    content: list[dict[str, Any]] = shaped["content"]
    return content


def _done_reason(finish: FinishReason | None) -> str:
    return "length" if finish == "length" else "stop"


def _final(reply: Reply, finish: FinishReason | None, usage: Usage) -> dict[str, Any]:
    end = time.perf_counter_ns()
    first = reply.first_ns if reply.first_ns is not None else end
    return {
        **reply.frame("", done=True),
        "done_reason": _done_reason(finish),
        "total_duration": end - reply.started_ns,
        "load_duration": 0,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": first - reply.started_ns,
        "eval_count": usage.completion_tokens,
        "eval_duration": end - first,
    }


async def answer_frames(chunks: AsyncIterator[Chunk], reply: Reply) -> AsyncIterator[dict[str, Any]]:
    calls = _Calls()
    finish: FinishReason | None = None
    usage = Usage()
    try:
        async for chunk in chunks:
            if reply.first_ns is None:
                reply.first_ns = time.perf_counter_ns()
            if chunk.text or chunk.logprobs:
                frame = reply.frame(chunk.text)
                if chunk.logprobs:
                    frame["logprobs"] = _logprobs(chunk.logprobs)
                yield frame
            for delta in chunk.tool_calls or []:
                calls.add(delta)
            finish = chunk.finish_reason or finish
            usage = chunk.usage or usage
            if isinstance(chunk.json, dict) and isinstance(chunk.json.get("text"), str):
                reply.json_text = chunk.json["text"]
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    if calls.calls and reply.chat:
        frame = reply.frame("")
        frame["message"]["tool_calls"] = calls.ollama(reply.model)
        yield frame
    yield _final(reply, finish, usage)


async def whole_answer(frames: AsyncIterator[dict[str, Any]], reply: Reply) -> dict[str, Any]:
    """The answer's objects as one: the pieces' text joined, the tool calls and log probabilities gathered, the
    last object's fields. A JSON answer the pipeline had to repair reads as the repaired JSON."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    logprobs: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    async for frame in frames:
        texts.append(frame["message"]["content"] if reply.chat else frame["response"])
        if reply.chat:
            calls += frame["message"].get("tool_calls", [])
        logprobs += frame.get("logprobs", [])
        last = frame
    text = reply.json_text if reply.json_text is not None else "".join(texts)
    whole = {**last, "message": {"role": "assistant", "content": text}} if reply.chat else {**last, "response": text}
    if calls:
        whole["message"]["tool_calls"] = calls
    if logprobs:
        whole["logprobs"] = logprobs
    return whole
