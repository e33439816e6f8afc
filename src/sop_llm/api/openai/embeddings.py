"""POST /v1/embeddings: float lists or base64 little-endian float32 (the official SDK's default)."""

from __future__ import annotations

import base64

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from sop_llm.api.body import documented_body, parse_body
from sop_llm.api.contracts import answers
from sop_llm.api.deps import services_of
from sop_llm.api.openai.answers import EmbeddingList
from sop_llm.api.openai.errors import OPENAI_ERRORS
from sop_llm.api.openai.protocol import EmbeddingRequest
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import BadRequestError
from sop_llm.infra.lists import openai_list

router = APIRouter(tags=["openai"], responses=OPENAI_ERRORS)


@router.post(
    "/embeddings",
    openapi_extra=documented_body(EmbeddingRequest),
    responses=answers(EmbeddingList, "One embedding a text, in order"),
)
async def embeddings(request: Request) -> Response:
    body = await parse_body(request, EmbeddingRequest)
    services = services_of(request)
    manager = services.embeddings
    await services.catalog.ensure(body.model)
    model = manager.get(body.model)
    texts = body.texts()
    async with services.accounting.charged(model.name, sum(map(len, texts))) as charge:
        result = await manager.embed(model.name, texts)
        charge.used(result.tokens, result.model)
    dims = int(result.vectors.shape[1])
    if body.dimensions is not None and body.dimensions != dims:
        raise BadRequestError(
            f"model '{result.model}' produces {dims}-dimensional vectors and cannot shorten them; omit `dimensions`",
            param="dimensions",
        )
    vectors = result.vectors.astype("<f4", copy=False)
    if body.encoding_format == "base64":
        data = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row.tobytes()).decode("ascii")}
            for i, row in enumerate(vectors)
        ]
    else:
        data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)]
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return json_response(openai_list(data, model=result.model, usage=usage))
