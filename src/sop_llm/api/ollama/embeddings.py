"""POST /api/embed (one text or several) and the older POST /api/embeddings (one `prompt`), on the service's
embedding models, metered like every other embedding request. Vectors are L2-normalised, as Ollama's /api/embed
returns them (the older route returns them so too).

- `truncate` (default true): inputs longer than the model's input limit are cut to fit, as the embedding models
  always do here. With false, an input that might not fit — more UTF-8 bytes than the model reads tokens, with room
  for its special tokens — is refused with a 400 instead, so nothing is ever cut in silence.
- `dimensions`: the first N dimensions of each vector, normalised again (what Ollama does); a number at or above
  the model's own leaves the vectors whole.
- An empty `input` (or `prompt`) embeds nothing and answers an empty list, as Ollama's "load" request does."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sop_llm.api.body import documented_body, parse_body
from sop_llm.api.contracts import answers
from sop_llm.api.deps import services_of
from sop_llm.api.ollama.answers import Embed, LegacyEmbedding
from sop_llm.api.ollama.errors import OLLAMA_ERRORS
from sop_llm.api.ollama.keep_alive import apply_keep_alive
from sop_llm.api.ollama.names import embedding_model
from sop_llm.api.ollama.protocol import EmbeddingsRequest, EmbedRequest
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import BadRequestError
from sop_llm.services.container import Services
from sop_llm.services.embeddings.manager import Embeddings

if TYPE_CHECKING:
    import numpy as np

router = APIRouter(tags=["ollama"], responses=OLLAMA_ERRORS)
SPECIAL_TOKENS = 4  # room left for the start, end and separator tokens a model adds around a text


@router.post(
    "/embed", openapi_extra=documented_body(EmbedRequest), responses=answers(Embed, "One vector an input, in order")
)
async def embed(request: Request) -> Response:
    started = time.perf_counter_ns()
    body = await parse_body(request, EmbedRequest)
    services = services_of(request)
    await services.catalog.ensure(body.wanted())
    model = embedding_model(services, body.wanted())
    apply_keep_alive(services, model, body.keep_alive)
    texts = body.texts()
    if not texts:
        return json_response({"model": body.model, "embeddings": []})
    if not body.truncate:
        _refuse_what_might_not_fit(services, model, texts)
    result = await _embedded(request, services, model, texts)
    return json_response(
        {
            "model": body.model,
            "embeddings": _shortened(result.vectors, body.dimensions),
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": 0,
            "prompt_eval_count": result.tokens,
        }
    )


@router.post(
    "/embeddings",
    openapi_extra=documented_body(EmbeddingsRequest),
    responses=answers(LegacyEmbedding, "The prompt's vector (empty for an empty prompt)"),
)
async def embeddings(request: Request) -> Response:
    body = await parse_body(request, EmbeddingsRequest)
    services = services_of(request)
    await services.catalog.ensure(body.wanted())
    model = embedding_model(services, body.wanted())
    apply_keep_alive(services, model, body.keep_alive)
    if not body.prompt:
        return json_response({"embedding": []})
    result = await _embedded(request, services, model, [body.prompt])
    return json_response({"embedding": result.vectors[0]})


async def _embedded(request: Request, services: Services, model: str, texts: list[str]) -> Embeddings:
    async with services.accounting.charged(model, sum(map(len, texts))) as charge:
        result = await services.embeddings.embed(model, texts)
        charge.used(result.tokens, result.model)
    return result


def _refuse_what_might_not_fit(services: Services, model: str, texts: list[str]) -> None:
    """No tokenizer makes more tokens of a text than it has UTF-8 bytes; a text within that bound fits for sure."""
    limit = next((m.get("max_input_tokens") for m in services.embeddings.describe() if m["name"] == model), None)
    if limit is None:
        return  # not loaded: embedding answers why
    config = services.embeddings.get(model).config
    prefix = max(len(config.query_prefix.encode()), len(config.passage_prefix.encode()))
    room = int(limit) - SPECIAL_TOKENS - prefix
    for i, text in enumerate(texts):
        size = len(text.encode())
        if size > room:
            raise BadRequestError(
                f"input[{i}]: {size} bytes may be more than the {limit} tokens '{model}' reads, and truncate is "
                "false; send truncate: true (the default) to have it cut to fit, or a shorter input",
                param="input",
            )


def _shortened(vectors: np.ndarray, dimensions: int | None) -> Any:
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    kept = vectors[:, :dimensions]
    norms = (kept * kept).sum(axis=1, keepdims=True) ** 0.5
    return kept / norms.clip(min=1e-12)
