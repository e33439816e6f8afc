"""Token log probabilities in OpenAI's two shapes: chat (`choices[].logprobs.content`, one object per token) and
legacy completions (`choices[].logprobs` with parallel `tokens`, `token_logprobs`, `top_logprobs`, `text_offset`)."""

from __future__ import annotations

from typing import Any

from sop_llm.providers.types import TokenLogprob


def chat_logprobs(tokens: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if tokens is None:
        return None
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.raw),
                "top_logprobs": [{"token": text, "logprob": lp, "bytes": list(raw)} for text, raw, lp in t.top],
            }
            for t in tokens
        ],
        "refusal": None,
    }


def completion_logprobs(tokens: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """`offset`: where the first token starts in the text (the length of what earlier stream chunks sent)."""
    if tokens is None:
        return None
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{text: lp for text, _, lp in t.top} for t in tokens],
        "text_offset": offsets,
    }
