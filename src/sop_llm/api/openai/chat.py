"""POST /v1/chat/completions and POST /v1/completions."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sop_llm.api.answer_cache import cached_answer, remember_answer
from sop_llm.api.body import documented_body, parse_body
from sop_llm.api.contracts import EVENT_STREAM, answers
from sop_llm.api.deps import ServicesDep, services_of
from sop_llm.api.generation import open_generation_stream, run_generation
from sop_llm.api.openai.answers import ChatCompletion, TextCompletion
from sop_llm.api.openai.errors import OPENAI_ERRORS
from sop_llm.api.openai.logprobs import chat_logprobs, completion_logprobs
from sop_llm.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from sop_llm.api.openai.streaming import JSON_VERDICT_FIELD, openai_events
from sop_llm.api.responses import EventStreamResponse, json_response
from sop_llm.infra.trace import new_trace_id
from sop_llm.providers.types import SEED_MAX, Chunk, Completion, GenerationRequest, Usage
from sop_llm.services.container import Services

router = APIRouter(tags=["openai"], responses=OPENAI_ERRORS)


def _chat_request(body: ChatCompletionRequest, default_max: int) -> GenerationRequest:
    return GenerationRequest(
        messages=[m.to_chat_message(i) for i, m in enumerate(body.messages)],
        max_tokens=body.token_limit(default_max),
        max_tokens_asked=body.max_tokens is not None or body.max_completion_tokens is not None,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stops(),
        seed=body.seed,
        json_mode=body.response_format.to_json_mode() if body.response_format else None,
        tools=body.tools,
        tool_choice=body.tool_choice,
        logprobs=body.logprob_alternatives(),
        **body.sampling(),
    )


async def _generations(
    request: Request,
    services: Services,
    body: ChatCompletionRequest | CompletionRequest,
    gens: list[GenerationRequest],
) -> tuple[str, list[Completion], dict[str, Any] | None]:
    """`body.n` generations of each of `gens`, run together (each choice with its own seed when one is given): the
    model that answered, the completions in order (all choices of the first, then of the next), and the JSON
    verdict of the first."""
    n = body.choices()
    if n == 1 and len(gens) == 1:
        model, completion, verdict = await run_generation(request, services, body.model, gens[0], body.fallbacks)
        return model, [completion], verdict
    try:
        async with asyncio.TaskGroup() as group:  # one failing cancels the others
            runs = [
                group.create_task(run_generation(request, services, body.model, _choice(gen, i), body.fallbacks))
                for gen in gens
                for i in range(n)
            ]
    except ExceptionGroup as failed:  # the request fails as its first failing choice did
        raise failed.exceptions[0] from None
    results = [run.result() for run in runs]
    return results[0][0], [completion for _, completion, _ in results], results[0][2]


def _choice(gen: GenerationRequest, index: int) -> GenerationRequest:
    if gen.seed is None:
        return gen
    seed = gen.seed + index if gen.seed + index <= SEED_MAX else gen.seed - index
    return replace(gen, seed=seed)


def _usage(completions: list[Completion], prompts: int = 1) -> dict[str, Any]:
    """Each prompt once (as OpenAI counts it), every choice's tokens."""
    per_prompt = len(completions) // prompts
    firsts = completions[::per_prompt]
    prompt_tokens = sum(c.usage.prompt_tokens for c in firsts)
    cached = sum(c.usage.cached_tokens for c in firsts)
    return Usage(prompt_tokens, sum(c.usage.completion_tokens for c in completions), cached).as_openai_dict()


@router.post(
    "/chat/completions",
    openapi_extra=documented_body(ChatCompletionRequest),
    responses=answers(
        ChatCompletion,
        "The whole answer",
        stream=EVENT_STREAM,
        stream_description="`stream: true`: `data: <chat.completion.chunk>` events, then `data: [DONE]`; an error "
        'after the first event is `data: {"error": …}` (OpenAI\'s error body) before `[DONE]`',
    ),
)
async def chat_completions(request: Request) -> Response:
    body = await parse_body(request, ChatCompletionRequest)
    body.choices()  # refuse what cannot be served before anything runs
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
            logprobs = chat_logprobs(chunk.logprobs)
            return {"index": 0, "delta": delta, "finish_reason": chunk.finish_reason, "logprobs": logprobs}

        model, chunks = await open_generation_stream(request, services, body.model, gen, body.fallbacks)
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        return EventStreamResponse(openai_events(chunks, base, choice, body.include_usage))
    model, completions, verdict = await _generations(request, services, body, [gen])
    reply: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [_chat_choice(i, completion) for i, completion in enumerate(completions)],
        "usage": _usage(completions),
    }
    if verdict is not None:
        reply[JSON_VERDICT_FIELD] = verdict
    return await remember_answer(request, json_response(reply))


def _chat_choice(index: int, completion: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": completion.text, "refusal": None}
    if completion.tool_calls:
        message["tool_calls"] = completion.tool_calls
        message["content"] = completion.text or None  # OpenAI sends null content beside tool calls
    return {
        "index": index,
        "message": message,
        "finish_reason": completion.finish_reason,
        "logprobs": chat_logprobs(completion.logprobs),
    }


@router.post(
    "/completions",
    responses=answers(
        TextCompletion,
        "The whole answer",
        stream=EVENT_STREAM,
        stream_description="`stream: true`: `data: <text_completion>` events, then `data: [DONE]`; an error after "
        'the first event is `data: {"error": …}` (OpenAI\'s error body) before `[DONE]`',
    ),
)
async def completions(body: CompletionRequest, request: Request, services: ServicesDep) -> Response:
    body.choices()
    gens = [
        GenerationRequest(
            prompt=prompt,
            max_tokens=body.max_tokens or 16,
            max_tokens_asked=body.max_tokens is not None,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stops(),
            seed=body.seed,
            json_mode=body.response_format.to_json_mode() if body.response_format else None,
            logprobs=body.logprobs,
            **body.sampling(),
        )
        for prompt in body.prompt_texts()
    ]
    created = int(time.time())
    completion_id = f"cmpl-{new_trace_id()}"
    if body.stream:
        sent = 0

        def choice(chunk: Chunk | None) -> dict[str, Any]:
            nonlocal sent
            if chunk is None:
                return {}
            logprobs = completion_logprobs(chunk.logprobs, sent)
            sent += len(chunk.text)
            return {"index": 0, "text": chunk.text, "finish_reason": chunk.finish_reason, "logprobs": logprobs}

        model, chunks = await open_generation_stream(request, services, body.model, gens[0], body.fallbacks)
        base = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
        return EventStreamResponse(openai_events(chunks, base, choice, body.include_usage))
    model, completions, verdict = await _generations(request, services, body, gens)
    answers = [
        {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": completion_logprobs(c.logprobs)}
        for i, c in enumerate(completions)
    ]
    reply: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": answers,
        "usage": _usage(completions, len(gens)),
    }
    if verdict is not None:
        reply[JSON_VERDICT_FIELD] = verdict
    return json_response(reply)
