"""POST /v1/rerank and POST /api/v1/rerank: documents ordered by relevance to a query, in the Cohere / Jina shape.

One router, mounted under both prefixes; errors take each surface's shape (OpenAI's under /v1, the native one
under /api/v1). Fields other clients send and this service does not use (`rank_fields`, `max_tokens_per_doc`, …)
are ignored.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import RerankAnswer
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.openai.errors import OPENAI_ERRORS
from sop_llm.api.responses import json_response

# One route on two surfaces, each with its own error body: the native one under /api/v1, and OpenAI's under /v1,
# where Cohere / Jina clients look for it.
router = APIRouter(tags=["rerank"], responses=NATIVE_ERRORS)
openai_router = APIRouter(tags=["rerank"], responses=OPENAI_ERRORS)


class TextDocument(BaseModel):
    """A document as an object (Jina, Cohere v1); only `text` is read."""

    text: str


class RerankBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="a cross-encoder or an embedding model; the default embedding model")
    query: str = Field(description="the text the documents are ranked against")
    documents: list[str | TextDocument] = Field(description='strings or {"text": …} objects')
    top_n: int | None = Field(None, description="return only the n most relevant (at least 1); all when omitted")
    return_documents: bool = Field(False, description='add each document as {"text": …} to its result')

    @field_validator("documents", mode="before")
    @classmethod
    def _strings_or_text_objects(cls, value: Any) -> Any:
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, str) and not (isinstance(item, dict) and isinstance(item.get("text"), str)):
                    message = f'documents[{i}] must be a string or an object {{"text": "…"}}'
                    raise PydanticCustomError("document_type", message)
        return value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


@openai_router.post("/rerank", responses=answers(RerankAnswer, "The documents, most relevant first"))
@router.post("/rerank", responses=answers(RerankAnswer, "The documents, most relevant first"))
async def rerank(body: RerankBody, request: Request, services: ServicesDep) -> Response:
    documents = body.texts()
    await services.catalog.ensure(body.model)
    model = services.rerank.resolve(body.model)
    pair_chars = len(body.query) * len(documents) + sum(map(len, documents))
    async with services.accounting.charged(model, pair_chars) as charge:
        ranking = await services.rerank.rerank(model, body.query, documents, body.top_n)
        charge.used(ranking.tokens)
    results = []
    for item in ranking.results:
        result: dict[str, Any] = {"index": item.index, "relevance_score": item.score}
        if body.return_documents:
            result["document"] = {"text": documents[item.index]}
        results.append(result)
    return json_response(
        {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": ranking.model,
            "results": results,
            "usage": {"prompt_tokens": ranking.tokens, "total_tokens": ranking.tokens},
        }
    )
