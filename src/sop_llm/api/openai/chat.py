"""POST /v1/chat/completions and POST /v1/completions."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sop_llm.api.answer_cache import cached_answer, remember_answer
from sop_llm.api.body import documented_body, parse_body
from sop_llm.api.deps import ServicesDep, services_of
from sop_llm.api.generation import open_generation_stream, run_generation
from sop_llm.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from sop_llm.api.openai.streaming import JSON_VERDICT_FIELD, openai_events
from sop_llm.api.responses import EventStreamResponse, json_response
from sop_llm.infra.trace import new_trace_id
from sop_llm.providers.types import Chunk, GenerationRequest

router = APIRouter(tags=["openai"])


def _chat_request(body: ChatCompletionRequest, default_max: int) -> GenerationRequest:
    return GenerationRequest(
        messages=[m.to_chat_message(i) for i, m in enumerate(body.messages)],
        max_tokens=body.token_limit(default_max),
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stops(),
        seed=body.seed,
        json_mode=body.response_format.to_json_mode() if body.response_format else None,
        tools=body.tools,
        tool_choice=body.tool_choice,
    )


@router.post("/chat/completions", openapi_extra=documented_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    body = await parse_body(request, ChatCompletionRequest)
    if not body.stream and (hit := await cached_answer(request)) is not None:
        return hit
    services = services_of(request)
    gen = _chat_request(body, services.router.default_max_tokens)
    created = int(time.time())
    completion_id = f"chatcmpl-{new_trace_id()}"
    if body.stream:

        def choice(chunk: Chunk | None) -> dict[str, Any]:
            if chunk is None:
                delta: dict[str, Any] = {"role": "assistant", "content": ""}
                return {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
            delta = {"content": chunk.text} if chunk.text else {}
            if chunk.tool_calls:
                delta["tool_calls"] = chunk.tool_calls
            return {"index": 0, "delta": delta, "finish_reason": chunk.finish_reason, "logprobs": None}

        model, chunks = await open_generation_stream(request, services, body.model, gen, body.fallbacks)
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        return EventStreamResponse(openai_events(chunks, base, choice, body.include_usage))
    model, completion, verdict = await run_generation(request, services, body.model, gen, body.fallbacks)
    message: dict[str, Any] = {"role": "assistant", "content": completion.text, "refusal": None}
    if completion.tool_calls:
        message["tool_calls"] = completion.tool_calls
        message["content"] = completion.text or None  # OpenAI sends null content beside tool calls
    reply: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason, "logprobs": None}],
        "usage": completion.usage.as_dict(),
    }
    if verdict is not None:
        reply[JSON_VERDICT_FIELD] = verdict
    return await remember_answer(request, json_response(reply))


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request, services: ServicesDep) -> Response:
    gen = GenerationRequest(
        prompt=body.prompt_text(),
        max_tokens=body.max_tokens or 16,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stops(),
        seed=body.seed,
        json_mode=body.response_format.to_json_mode() if body.response_format else None,
    )
    created = int(time.time())
    completion_id = f"cmpl-{new_trace_id()}"
    if body.stream:

        def choice(chunk: Chunk | None) -> dict[str, Any]:
            if chunk is None:
                return {}
            return {"index": 0, "text": chunk.text, "finish_reason": chunk.finish_reason, "logprobs": None}

        model, chunks = await open_generation_stream(request, services, body.model, gen, body.fallbacks)
        base = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
        return EventStreamResponse(openai_events(chunks, base, choice, body.include_usage))
    model, completion, verdict = await run_generation(request, services, body.model, gen, body.fallbacks)
    answer = {"index": 0, "text": completion.text, "finish_reason": completion.finish_reason, "logprobs": None}
    reply: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [answer],
        "usage": completion.usage.as_dict(),
    }
    if verdict is not None:
        reply[JSON_VERDICT_FIELD] = verdict
    return json_response(reply)
