"""POST /v1/messages and POST /v1/messages/count_tokens: Anthropic's Messages API on every model the service serves,
translated onto its chat generation (conversation.py), answered as Anthropic messages (replies.py) or events
(streaming.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sop_llm.api.answer_cache import cached_answer, remember_answer
from sop_llm.api.anthropic.answers import AnthropicMessage, TokenCount
from sop_llm.api.anthropic.conversation import chat_messages, estimate_tokens, tools_and_choice
from sop_llm.api.anthropic.errors import ANTHROPIC_ERRORS
from sop_llm.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from sop_llm.api.anthropic.replies import collect, message_body, usage_body
from sop_llm.api.anthropic.stops import StopSequences
from sop_llm.api.anthropic.streaming import message_events
from sop_llm.api.body import documented_body, parse_body
from sop_llm.api.contracts import EVENT_STREAM, answers
from sop_llm.api.deps import services_of
from sop_llm.api.disconnect import cancel_on_disconnect
from sop_llm.api.generation import open_generation_stream, run_generation
from sop_llm.api.responses import EventStreamResponse, json_response
from sop_llm.infra.errors import UnsupportedFeatureError
from sop_llm.infra.trace import current_trace_id, new_trace_id
from sop_llm.providers.types import GenerationRequest, JsonMode, Usage

router = APIRouter(tags=["anthropic"], responses=ANTHROPIC_ERRORS)


def _generation(body: MessagesRequest) -> GenerationRequest:
    tools, tool_choice = tools_and_choice(body)
    answer_format = body.output_config.format if body.output_config else None
    return GenerationRequest(
        messages=chat_messages(body),
        max_tokens=body.max_tokens,
        max_tokens_asked=True,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        json_mode=JsonMode(answer_format.schema_) if answer_format else None,  # through the JSON pipeline
        tools=tools,
        tool_choice=tool_choice,
    )


@router.post(
    "/messages",
    openapi_extra=documented_body(MessagesRequest),
    responses=answers(
        AnthropicMessage,
        "The whole message",
        stream=EVENT_STREAM,
        stream_description="`stream: true`: `message_start`, then per content block `content_block_start`, "
        "`content_block_delta`… and `content_block_stop`, then `message_delta` and `message_stop`; an error is an "
        "`error` event (Anthropic's error body)",
    ),
)
async def create_message(request: Request) -> Response:
    body = await parse_body(request, MessagesRequest)
    if not body.stream and (hit := await cached_answer(request)) is not None:
        return hit
    services = services_of(request)
    gen = _generation(body)
    message_id = f"msg_{new_trace_id()}"
    headers = {"request-id": current_trace_id()}
    estimate = estimate_tokens(gen.messages or [], gen.tools)
    stops = StopSequences(body.stop_sequences, estimate) if body.stop_sequences else None
    if body.stream:
        model, chunks = await open_generation_stream(request, services, body.model, gen, body.fallbacks)
        start: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_body(Usage(estimate, 0)),
        }
        events = message_events(stops.apply(chunks) if stops else chunks, start, stops)
        return EventStreamResponse(events, headers=headers)
    if stops is None:
        model, completion, _ = await run_generation(request, services, body.model, gen, body.fallbacks)
    else:
        model, chunks = await open_generation_stream(request, services, body.model, gen, body.fallbacks)
        completion = await cancel_on_disconnect(request, collect(stops.apply(chunks)))
    reply = message_body(message_id, model, completion, stops.matched if stops else None)
    return await remember_answer(request, json_response(reply, headers=headers))


@router.post(
    "/messages/count_tokens",
    openapi_extra=documented_body(CountTokensRequest),
    responses=answers(TokenCount, "The prompt's length in tokens"),
)
async def count_tokens(request: Request) -> Response:
    """Local models count exactly: the prompt is rendered with the model's chat template (tool instructions
    included) and tokenized, without taking a generation slot. A local model that cannot tokenize here reads the
    prompt in a one-token generation instead, which reports its length. Remote deployments get an estimate of
    about four characters a token."""
    body = await parse_body(request, CountTokensRequest)
    services = services_of(request)
    messages = chat_messages(body)
    tools, tool_choice = tools_and_choice(body)
    name = services.router.resolve(body.model)
    if name not in services.local:
        return json_response({"input_tokens": estimate_tokens(messages, tools)})
    gen = GenerationRequest(messages=messages, max_tokens=1, temperature=0, tools=tools, tool_choice=tool_choice)
    try:
        return json_response({"input_tokens": len(await (await services.local.ready_provider(name)).tokenize(gen))})
    except UnsupportedFeatureError:
        pass
    _, completion = await cancel_on_disconnect(request, services.router.generate_with_fallback(name, gen, []))
    return json_response({"input_tokens": completion.usage.prompt_tokens})
