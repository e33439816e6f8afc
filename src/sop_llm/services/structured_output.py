"""Generation with JSON guaranteed (R-J1–R-J3): constrained decoding where the provider can, then the JSONFixer
pipeline on whatever came back. A whole answer is replaced by the schema-valid JSON; a stream is passed through
as generated and its last chunk carries the verdict (or the stream ends with a json_fix_failed error)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

from sop_llm.providers.types import Capability, ChatMessage, Chunk, Completion, Constraint, GenerationRequest
from sop_llm.services.json_fixer import JSONFixer, JSONOutcome
from sop_llm.services.unified_llm import UnifiedLLM


class StructuredOutput:
    def __init__(self, unified: UnifiedLLM, fixer: JSONFixer) -> None:
        self._unified = unified
        self.fixer = fixer

    def _prepare(self, model: str | None, request: GenerationRequest) -> GenerationRequest:
        assert request.json_mode is not None
        schema = request.json_mode.schema
        self.fixer.check_schema(schema)
        primary = self._unified.resolve(model)
        if Capability.JSON_SCHEMA in self._unified.capabilities_of(primary) or request.messages is None:
            return request
        # No constrained decoding on this provider: say what is wanted; the pipeline checks the answer anyway.
        wanted = f"JSON matching this JSON Schema: {json.dumps(schema)}" if schema else "a single JSON object"
        hint = ChatMessage("system", f"Answer with only {wanted}. No prose, no code fences.")
        return replace(request, messages=[hint, *request.messages])

    def _constraint(self, deployment: str, reported: Constraint | None, request: GenerationRequest) -> Constraint:
        if reported is not None:
            return reported
        if Capability.JSON_SCHEMA in self._unified.capabilities_of(deployment):
            return "schema" if request.json_mode and request.json_mode.schema is not None else "json"
        return "none"

    async def generate(
        self, model: str | None, request: GenerationRequest, fallbacks: list[str] | None = None
    ) -> tuple[str, Completion, JSONOutcome]:
        request = self._prepare(model, request)
        name, completion = await self._unified.generate(model, request, fallbacks)
        outcome = await self.fixer.resolve(
            completion.text,
            request.json_mode.schema if request.json_mode else None,
            constraint=self._constraint(name, completion.constraint, request),
            source="generation",
            source_model=name,
        )
        return name, replace(completion, text=outcome.text), outcome

    async def open_stream(
        self, model: str | None, request: GenerationRequest, fallbacks: list[str] | None = None
    ) -> tuple[str, AsyncIterator[Chunk]]:
        request = self._prepare(model, request)
        name, chunks = await self._unified.open_stream(model, request, fallbacks)
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
