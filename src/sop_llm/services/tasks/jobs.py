"""What a task can do: each kind is a plain `async def` over the same services the HTTP API uses. Payloads were
validated by the API when the task was accepted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sop_llm.providers.types import ChatMessage, GenerationRequest, JsonMode
from sop_llm.services.embedding_manager import EmbeddingManager
from sop_llm.services.structured_output import StructuredOutput
from sop_llm.services.unified_llm import UnifiedLLM


@dataclass(frozen=True)
class JobContext:
    unified: UnifiedLLM
    structured: StructuredOutput
    embeddings: EmbeddingManager


Job = Callable[[dict[str, Any], JobContext], Awaitable[Any]]


def _generation_request(payload: dict[str, Any]) -> GenerationRequest:
    messages = payload.get("messages")
    schema = payload.get("json_schema")
    return GenerationRequest(
        messages=[ChatMessage(m["role"], m["content"]) for m in messages] if messages else None,
        prompt=payload.get("prompt"),
        max_tokens=payload.get("max_tokens", 256),
        temperature=payload.get("temperature", 0.7),
        top_p=payload.get("top_p", 0.95),
        stop=payload.get("stop", []),
        seed=payload.get("seed"),
        json_mode=JsonMode(schema) if schema is not None else None,
    )


async def generate(payload: dict[str, Any], ctx: JobContext) -> Any:
    request = _generation_request(payload)
    model, fallbacks = payload.get("model"), payload.get("fallbacks")
    if request.json_mode is None:
        name, completion = await ctx.unified.generate(model, request, fallbacks)
        verdict = None
    else:
        name, completion, outcome = await ctx.structured.generate(model, request, fallbacks)
        verdict = {"value": outcome.value, **outcome.describe()}
    result = {
        "model": name,
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "usage": completion.usage.as_dict(),
    }
    return {**result, "json": verdict} if verdict else result


async def embeddings(payload: dict[str, Any], ctx: JobContext) -> Any:
    result = await ctx.embeddings.embed(payload.get("model"), payload["texts"], payload.get("input_type"))
    return {"model": result.model, "embeddings": result.vectors.tolist(), "usage": {"prompt_tokens": result.tokens}}


async def similarity(payload: dict[str, Any], ctx: JobContext) -> Any:
    if payload.get("text1") is not None:
        model, score = await ctx.embeddings.similarity(payload.get("model"), payload["text1"], payload["text2"])
        return {"model": model, "similarity": score}
    model, ranked = await ctx.embeddings.rank(
        payload.get("model"), payload["query"], payload["candidates"], payload.get("top_k")
    )
    return {"model": model, "results": [{"index": r.index, "similarity": r.score} for r in ranked]}


async def json_fix(payload: dict[str, Any], ctx: JobContext) -> Any:
    outcome = await ctx.structured.fixer.resolve(
        payload["text"], payload.get("schema"), fixer_model=payload.get("model")
    )
    return {"value": outcome.value, "provenance": outcome.provenance, "attempts": outcome.attempts}


JOBS: dict[str, Job] = {"generate": generate, "embeddings": embeddings, "similarity": similarity, "json_fix": json_fix}
