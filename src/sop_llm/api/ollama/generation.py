"""POST /api/chat and POST /api/generate: Ollama's generation on every model the service serves, through the same
generation path as every other surface (routing, fallbacks, rate limits, usage and budgets; a client that goes away
stops the work). Answers stream as NDJSON unless `stream` is false (frames.py, streaming.py).

A request with nothing to generate (no messages; an empty prompt) is Ollama's "load" request: it is answered
`done_reason: "load"` once the model is loaded (keep_alive.py says what happens to `keep_alive` there)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from sop_llm.api.answer_cache import cached_answer, remember_answer
from sop_llm.api.body import documented_body, parse_body
from sop_llm.api.contracts import NDJSON, answers
from sop_llm.api.deps import services_of
from sop_llm.api.disconnect import cancel_on_disconnect
from sop_llm.api.generation import open_generation_stream
from sop_llm.api.ollama.answers import ChatAnswer, GenerateAnswer
from sop_llm.api.ollama.conversation import (
    chat_messages,
    generate_prompt,
    json_mode,
    refuse_thinking,
    tools_and_choice,
)
from sop_llm.api.ollama.errors import OLLAMA_ERRORS
from sop_llm.api.ollama.frames import Reply, answer_frames, whole_answer
from sop_llm.api.ollama.keep_alive import apply_keep_alive
from sop_llm.api.ollama.names import generation_model
from sop_llm.api.ollama.options import sampling
from sop_llm.api.ollama.protocol import ChatRequest, GenerateRequest
from sop_llm.api.ollama.streaming import NDJSONResponse, ndjson_lines
from sop_llm.api.responses import json_response
from sop_llm.providers.types import GenerationRequest
from sop_llm.services.container import Services

router = APIRouter(tags=["ollama"], responses=OLLAMA_ERRORS)


@router.post(
    "/chat",
    openapi_extra=documented_body(ChatRequest),
    responses=answers(
        ChatAnswer,
        "`stream: false`: the whole answer (or the answer to a load or unload request)",
        stream=NDJSON,
        stream_description="`stream` (the default): one JSON object a line, each like the whole answer, the last "
        'with `done: true`; an error is a last line `{"error": …}`',
    ),
)
async def chat(request: Request) -> Response:
    started = time.perf_counter_ns()
    body = await parse_body(request, ChatRequest)
    services = services_of(request)
    await services.catalog.ensure(body.wanted())
    model = generation_model(services, body.wanted(), "chat")
    refuse_thinking(body.model, body.think)
    reply = Reply(body.model, chat=True, started_ns=started)
    if not body.messages:
        return await _loaded(services, model, body.keep_alive, reply)
    tools, tool_choice = tools_and_choice(body)
    gen = GenerationRequest(
        messages=chat_messages(body.messages),
        json_mode=json_mode(body.format),
        tools=tools,
        tool_choice=tool_choice,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        **sampling(body.options, services.router.default_max_tokens),
    )
    apply_keep_alive(services, model, body.keep_alive, gen)
    return await _answer(request, services, model, gen, reply, body.streaming)


@router.post(
    "/generate",
    openapi_extra=documented_body(GenerateRequest),
    responses=answers(
        GenerateAnswer,
        "`stream: false`: the whole answer (or the answer to a load or unload request)",
        stream=NDJSON,
        stream_description="`stream` (the default): one JSON object a line, each like the whole answer, the last "
        'with `done: true`; an error is a last line `{"error": …}`',
    ),
)
async def generate(request: Request) -> Response:
    started = time.perf_counter_ns()
    body = await parse_body(request, GenerateRequest)
    services = services_of(request)
    await services.catalog.ensure(body.wanted())
    model = generation_model(services, body.wanted(), "generate")
    refuse_thinking(body.model, body.think)
    messages, prompt = generate_prompt(body)
    reply = Reply(body.model, chat=False, started_ns=started)
    if not body.prompt:
        return await _loaded(services, model, body.keep_alive, reply)
    gen = GenerationRequest(
        messages=messages,
        prompt=prompt,
        json_mode=json_mode(body.format),
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        **sampling(body.options, services.router.default_max_tokens),
    )
    apply_keep_alive(services, model, body.keep_alive, gen)
    return await _answer(request, services, model, gen, reply, body.streaming)


async def _loaded(services: Services, model: str, keep_alive: float | None, reply: Reply) -> Response:
    """Ollama's load request (a model and nothing to generate), or with keep_alive 0 its unload request."""
    if keep_alive == 0 and model in services.local:
        await services.local.unload(model)  # running requests finish first
        return json_response({**reply.frame("", done=True), "done_reason": "unload"})
    if model in services.local:
        await services.local.ready_provider(model)  # loads it if need be; 503 if that takes too long or fails
    apply_keep_alive(services, model, keep_alive)
    return json_response({**reply.frame("", done=True), "done_reason": "load"})


async def _answer(
    request: Request, services: Services, model: str, gen: GenerationRequest, reply: Reply, streaming: bool
) -> Response:
    if not streaming and (hit := await cached_answer(request)) is not None:
        return hit
    answered, chunks = await open_generation_stream(request, services, model, gen, None)
    if answered != model:
        reply.model = answered  # a fallback answered: say which
    frames = answer_frames(chunks, reply)
    if streaming:
        return NDJSONResponse(ndjson_lines(frames))
    whole = await cancel_on_disconnect(request, whole_answer(frames, reply))
    return await remember_answer(request, json_response(whole))
