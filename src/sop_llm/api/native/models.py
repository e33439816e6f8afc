from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from sop_llm.api.answer_cache import cached_answer, remember_answer
from sop_llm.api.contracts import EVENT_STREAM, answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.generation import open_generation_stream, run_generation
from sop_llm.api.internal_error import internal_error
from sop_llm.api.native.answers import Generated, LoadState, ModelsOverview
from sop_llm.api.native.errors import NATIVE_ERRORS, native_body
from sop_llm.api.request_state import require_admin
from sop_llm.api.responses import EventStreamResponse, json_response, sse_event
from sop_llm.infra.errors import AppError, BadRequestError, ModelNotFoundError
from sop_llm.providers.types import Chunk
from sop_llm.services.container import Services
from sop_llm.services.local.load_state import ModelState
from sop_llm.services.payloads import GenerateBody

router = APIRouter(tags=["models"], responses=NATIVE_ERRORS)


@router.get("/models", responses=answers(ModelsOverview, "Every model and the defaults"))
async def list_models(services: ServicesDep) -> Response:
    return json_response(
        {
            "default_model": services.settings.llm_default_model,
            "default_embedding_model": services.settings.llm_default_embedding_model,
            "models": services.router.describe() + services.embeddings.describe(),
        }
    )


@router.post(
    "/models/generate",
    responses=answers(
        Generated,
        "The whole answer",
        stream=EVENT_STREAM,
        stream_description="`stream: true`: `token` events (`{text}`), then `done` (`{model, finish_reason, usage}`) "
        "or `error` (the native error body)",
    ),
)
async def generate_text(body: GenerateBody, request: Request, services: ServicesDep) -> Response:
    """With `json_schema`, the answer is schema-valid JSON (or a 422 with every attempt) and `json` says how it
    was obtained: `{"value", "provenance", "attempts", "constraint"}`."""
    gen_request = body.to_request()
    if body.stream:
        model, chunks = await open_generation_stream(request, services, body.model, gen_request, body.fallbacks)
        return EventStreamResponse(_native_events(model, chunks))
    if (hit := await cached_answer(request)) is not None:
        return hit
    model, completion, verdict = await run_generation(request, services, body.model, gen_request, body.fallbacks)
    reply: dict[str, Any] = {
        "model": model,
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "usage": completion.usage.as_dict(),
    }
    if verdict is not None:
        reply["json"] = {"value": orjson.loads(completion.text), **verdict}
    return await remember_answer(request, json_response(reply))


async def _native_events(model: str, chunks: AsyncIterator[Chunk]) -> AsyncIterator[bytes]:
    """`event: token` per piece of text, then `event: done` with finish_reason and usage (or `event: error`)."""
    try:
        async for chunk in chunks:
            if chunk.text:
                yield sse_event({"text": chunk.text}, "token")
            if chunk.finish_reason is not None:
                usage = chunk.usage.as_dict() if chunk.usage else None
                done: dict[str, Any] = {"model": model, "finish_reason": chunk.finish_reason, "usage": usage}
                if chunk.json is not None:
                    done["json"] = chunk.json
                yield sse_event(done, "done")
    except AppError as exc:
        yield sse_event(native_body(exc), "error")
    except Exception as exc:  # a bug must still end the stream with an error event
        yield sse_event(native_body(internal_error(exc, "a stream")), "error")


@router.post(
    "/models/{name}/load",
    status_code=202,
    dependencies=[Depends(require_admin)],
    responses={
        **answers(LoadState, "The model is loading", status=202),
        **answers(LoadState, "The model was loaded already"),
    },
)
async def load_model(name: str, services: ServicesDep) -> Response:
    """202 while the model loads in the background; 200 when it is loaded already (nothing is loaded twice)."""
    kind, canonical = _local_model(name, services)
    state = services.embeddings.load(canonical) if kind == "embedding" else services.local.load(canonical)
    return json_response({"name": canonical, "state": state.value}, 200 if state is ModelState.READY else 202)


@router.post(
    "/models/{name}/unload",
    dependencies=[Depends(require_admin)],
    responses=answers(LoadState, "The model is unloaded"),
)
async def unload_model(name: str, services: ServicesDep) -> Response:
    kind, canonical = _local_model(name, services)
    if kind == "embedding":
        await services.embeddings.unload(canonical)
    else:
        await services.local.unload(canonical)
    return json_response({"name": canonical, "state": "unloaded"})


def _local_model(name: str, services: Services) -> tuple[str, str]:
    """("embedding" | "generation", canonical name) of a local model named by name or alias."""
    try:
        return "embedding", services.embeddings.resolve(name)
    except ModelNotFoundError:
        pass
    try:
        canonical = services.router.resolve(name)
    except ModelNotFoundError:
        raise ModelNotFoundError(f"no model named '{name}'", param="name") from None
    if canonical not in services.local:
        raise BadRequestError(f"'{name}' is a remote model; only local models are loaded and unloaded")
    return "generation", canonical
