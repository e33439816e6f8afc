"""The span of one call to an embedding model (the texts the cache did not have), after the OpenTelemetry GenAI
semantic conventions: `embeddings <model>`, INTERNAL (the model runs in this process), with `gen_ai.operation.name`
`embeddings`, `gen_ai.provider.name` (the provider type: `sentence_transformers`), `gen_ai.request.model`,
`gen_ai.embeddings.dimension.count`, `gen_ai.usage.input_tokens`, and `sop_llm.inputs` (the texts encoded). None
outside a traced request."""

from __future__ import annotations

import functools

from sop_llm.infra.telemetry import current_request_trace
from sop_llm.infra.telemetry.active import AttributeValue, Span, SpanShape
from sop_llm.providers.base import EmbeddingProvider


def embedding_span(name: str, provider: EmbeddingProvider, inputs: int) -> Span | None:
    trace = current_request_trace()
    if trace is None:
        return None
    shape = _shape(provider.provider_config.type, provider.model_config.model, name, provider.dimensions)
    return trace.child(shape, False, {"sop_llm.inputs": inputs})


@functools.lru_cache(maxsize=256)
def _shape(provider_type: str, model: str, deployment: str, dimensions: int) -> SpanShape:
    """Kept, so that the span writer encodes each model's shape once."""
    pairs: list[tuple[str, AttributeValue]] = [
        ("gen_ai.operation.name", "embeddings"),
        ("gen_ai.provider.name", provider_type),
        ("gen_ai.request.model", model),
        ("gen_ai.embeddings.dimension.count", dimensions),
        ("sop_llm.deployment", deployment),
    ]
    return SpanShape(f"embeddings {model}", pairs)


def failed(span: Span, exc: BaseException) -> None:
    if isinstance(exc, Exception):
        span.fail(type(exc).__qualname__, str(exc)[:500])
    else:
        span.fail("cancelled")
