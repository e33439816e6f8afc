"""Generation with JSON guaranteed: constrained decoding where the provider can, then the JSONFixer
pipeline on whatever came back. A whole answer is replaced by the schema-valid JSON; a stream is passed through
as generated and its last chunk carries the verdict (or the stream ends with a json_fix_failed error)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

from sop_llm.providers.types import Capability, ChatMessage, Chunk, Completion, Constraint, GenerationRequest
from sop_llm.services.routing.router import ModelRouter
from sop_llm.services.structured.budget import check_fits
from sop_llm.services.structured.fixer import JSONFixer, JSONOutcome


class StructuredOutput:
    def __init__(self, router: ModelRouter, fixer: JSONFixer) -> None:
        self._router = router
        self.fixer = fixer

    def _prepare(self, model: str | None, request: GenerationRequest) -> GenerationRequest:
        assert request.json_mode is not None
        schema = request.json_mode.schema
        self.fixer.check_schema(schema)
        if schema is not None:
            cap = self._router.default_max_tokens
            check_fits(schema, min(request.max_tokens, cap), "schema", f"LLM_MAX_TOKENS_PER_REQUEST is {cap}")
        primary = self._router.resolve(model)
        if Capability.JSON_SCHEMA in self._router.capabilities_of(primary) or request.messages is None:
            return request
        # No constrained decoding on this provider: say what is wanted; the pipeline checks the answer anyway.
        wanted = f"JSON matching this JSON Schema: {json.dumps(schema)}" if schema else "a single JSON object"
        hint = ChatMessage("system", f"Answer with only {wanted}. No prose, no code fences.")
        return replace(request, messages=[hint, *request.messages])

    def _constraint(self, deployment: str, reported: Constraint | None, request: GenerationRequest) -> Constraint:
        if reported is not None:
            return reported
        if Capability.JSON_SCHEMA in self._router.capabilities_of(deployment):
            return "schema" if request.json_mode and request.json_mode.schema is not None else "json"
        return "none"

    async def generate_json(
        self, model: str | None, request: GenerationRequest, fallbacks: list[str] | None = None
    ) -> tuple[str, Completion, JSONOutcome]:
        request = self._prepare(model, request)
        name, completion = await self._router.generate_with_fallback(model, request, fallbacks)
        outcome = await self.fixer.resolve(
            completion.text,
            request.json_mode.schema if request.json_mode else None,
            constraint=self._constraint(name, completion.constraint, request),
            source="generation",
            source_model=name,
        )
        return name, replace(completion, text=outcome.text), outcome

    async def stream_json(
        self, model: str | None, request: GenerationRequest, fallbacks: list[str] | None = None
    ) -> tuple[str, AsyncIterator[Chunk]]:
        request = self._prepare(model, request)
        name, chunks = await self._router.stream_with_fallback(model, request, fallbacks)
        return name, self._verdict_at_end(name, chunks, request)

    async def _verdict_at_end(
        self, name: str, chunks: AsyncIterator[Chunk], request: GenerationRequest
    ) -> AsyncIterator[Chunk]:
        parts: list[str] = []
        async for chunk in chunks:
            parts.append(chunk.text)
            if chunk.finish_reason is None:
                yield chunk
                continue
            generated = "".join(parts)
            outcome = await self.fixer.resolve(
                generated,
                request.json_mode.schema if request.json_mode else None,
                constraint=self._constraint(name, chunk.constraint, request),
                source="generation",
                source_model=name,
            )
            verdict = outcome.describe()
            if outcome.provenance != "parsed" or outcome.text != generated:
                verdict["text"] = outcome.text  # what the streamed text should be read as
            yield replace(chunk, json=verdict)
