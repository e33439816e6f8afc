"""POST /tokenize and POST /detokenize (also under /api/v1): a local model's token ids for a text, and back.

The shape is vLLM's: `/tokenize` takes `prompt` (a raw completion prompt) or `messages` (rendered with the model's
chat template, as a chat request would be) and answers `tokens`, `count` and `max_model_len`; `/detokenize` takes
`tokens` and answers `prompt`. The ids are the ones a generation reads, so `count` is what a request's
`usage.prompt_tokens` will say. Only llamacpp models tokenize; the model must be loaded.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import Detokenized, Tokenized
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.openai.protocol import Message
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import UnsupportedFeatureError
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.types import GenerationRequest
from sop_llm.services.container import Services

router = APIRouter(tags=["tokenize"], responses=NATIVE_ERRORS)


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="a local generation model; the default model when omitted")
    prompt: str | None = Field(None, description="a raw completion prompt")
    messages: list[Message] | None = Field(None, min_length=1, description="chat messages, rendered by the template")
    add_special_tokens: bool = Field(True, description="the start token and special-token markup, as generated")

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeBody:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        return self

    def request(self) -> GenerationRequest:
        if self.messages is not None:
            return GenerationRequest(messages=[m.to_chat_message(i) for i, m in enumerate(self.messages)])
        return GenerationRequest(prompt=self.prompt)


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="a local generation model; the default model when omitted")
    tokens: list[int] = Field(max_length=1_000_000, description="token ids of that model")


async def _local(services: Services, model: str | None) -> tuple[str, GenerationProvider]:
    name = services.router.resolve(model)
    if name not in services.local:
        raise UnsupportedFeatureError(
            f"model '{name}' is remote: only local models tokenize here; ask its own server", param="model"
        )
    return name, await services.local.ready_provider(name)


@router.post("/tokenize", responses=answers(Tokenized, "The token ids"))
async def tokenize(body: TokenizeBody, services: ServicesDep) -> Response:
    name, provider = await _local(services, body.model)
    tokens = await provider.tokenize(body.request(), special=body.add_special_tokens)
    answer: dict[str, Any] = {
        "model": name,
        "tokens": tokens,
        "count": len(tokens),
        "max_model_len": provider.model_config.context_length,
    }
    return json_response(answer)


@router.post("/detokenize", responses=answers(Detokenized, "The text of the token ids"))
async def detokenize(body: DetokenizeBody, services: ServicesDep) -> Response:
    name, provider = await _local(services, body.model)
    return json_response({"model": name, "prompt": await provider.detokenize(body.tokens)})
