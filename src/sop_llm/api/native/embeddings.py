from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import EmbeddingsAnswer, PairSimilarity, RankedSimilarity
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.responses import json_response
from sop_llm.services.payloads import EmbeddingsBody, SimilarityBody

router = APIRouter(tags=["embeddings"], responses=NATIVE_ERRORS)


@router.post("/embeddings", responses=answers(EmbeddingsAnswer, "One vector a text, in order"))
async def embeddings(body: EmbeddingsBody, services: ServicesDep) -> Response:
    manager = services.embeddings
    await services.catalog.ensure(body.model)
    async with services.accounting.charged(manager.get(body.model).name, sum(map(len, body.texts))) as charge:
        result = await manager.embed(body.model, body.texts, body.input_type)
        charge.used(result.tokens, result.model)
    return json_response(
        {
            "model": result.model,
            "embeddings": result.vectors,
            "dimensions": int(result.vectors.shape[1]),
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        }
    )


@router.post(
    "/similarity",
    responses=answers(
        PairSimilarity | RankedSimilarity, "`text1` and `text2`: their similarity; `query`: the candidates ranked"
    ),
)
async def similarity(body: SimilarityBody, services: ServicesDep) -> Response:
    manager = services.embeddings
    # Similarity reports no token count: it is charged as a request of the model, with no tokens.
    async with services.accounting.charged(manager.get(body.model).name, 0) as charge:
        if body.text1 is not None and body.text2 is not None:
            model, score = await manager.similarity(body.model, body.text1, body.text2)
            charge.used(0, model)
            return json_response({"model": model, "similarity": score})
        assert body.query is not None and body.candidates is not None
        model, ranked = await manager.rank(body.model, body.query, body.candidates, body.top_k)
        charge.used(0, model)
    return json_response(
        {
            "model": model,
            "results": [{"index": r.index, "text": body.candidates[r.index], "similarity": r.score} for r in ranked],
        }
    )
