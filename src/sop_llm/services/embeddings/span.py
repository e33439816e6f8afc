"""The span of one call to an embedding model (the texts the cache did not have), after the OpenTelemetry GenAI
semantic conventions: `embeddings <model>`, INTERNAL (the model runs in this process), with `gen_ai.operation.name`
`embeddings`, `gen_ai.provider.name` (the provider type: `sentence_transformers`), `gen_ai.request.model`,
`gen_ai.embeddings.dimension.count`, `gen_ai.usage.input_tokens`, and `sop_llm.inputs` (the texts encoded). None
outside a traced request."""

from __future__ import annotations

from sop_llm.infra.telemetry import current_request_trace
from sop_llm.infra.telemetry.active import Span
from sop_llm.providers.base import EmbeddingProvider


def embedding_span(name: str, provider: EmbeddingProvider, inputs: int) -> Span | None:
    trace = current_request_trace()
    if trace is None:
        return None
    model = provider.model_config.model
    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": provider.provider_config.type,
        "gen_ai.request.model": model,
        "gen_ai.embeddings.dimension.count": provider.dimensions,
        "sop_llm.deployment": name,
        "sop_llm.inputs": inputs,
    }
    return trace.child(f"embeddings {model}", False, attributes)


def failed(span: Span, exc: BaseException) -> None:
    if isinstance(exc, Exception):
        span.fail(type(exc).__qualname__, str(exc)[:500])
    else:
        span.fail("cancelled")
