"""The room a prompt leaves in a local model's context, and what happens when it does not leave enough."""

from __future__ import annotations

from sop_llm.infra.errors import ContextLengthExceededError
from sop_llm.providers.types import GenerationRequest


def answer_limit(model: str, prompt_tokens: int, context: int, request: GenerationRequest) -> int:
    """How many tokens the answer may have. A prompt that fills the context, or leaves less room than a max_tokens
    the caller set, is refused with the figures; nothing is cut off in silence. A max_tokens the caller did not
    set (a default) shrinks to the room there is."""
    room = context - prompt_tokens
    if room <= 0:
        raise ContextLengthExceededError(
            f"the prompt is {prompt_tokens} tokens; model '{model}' has a context of {context} tokens, so the "
            f"prompt is {1 - room} token(s) too long to leave room for an answer. Shorten the prompt",
            param="prompt" if request.prompt is not None else "messages",
            details={"prompt_tokens": prompt_tokens, "context_length": context, "over_by": 1 - room},
        )
    if request.max_tokens_asked and request.max_tokens > room:
        over = request.max_tokens - room
        raise ContextLengthExceededError(
            f"the prompt ({prompt_tokens} tokens) and max_tokens ({request.max_tokens}) need "
            f"{prompt_tokens + request.max_tokens} tokens; model '{model}' has a context of {context} tokens: "
            f"{over} over. Shorten the prompt or lower max_tokens to {room}",
            param="max_tokens",
            details={
                "prompt_tokens": prompt_tokens,
                "max_tokens": request.max_tokens,
                "context_length": context,
                "over_by": over,
            },
        )
    return min(request.max_tokens, room)
