"""`stop_sequences`, matched here rather than by the provider, so the answer can say which one ended it.

Providers strip a stop sequence and report a plain "stop", the same as the model's own end of turn; Anthropic's
answer names the sequence (`stop_reason: "stop_sequence"`, `stop_sequence: "…"`). So the sequences are not passed
down: this filter watches the streamed text, holds back a tail that may be the start of a sequence, and at the
first match ends the answer there and closes the generation (a local model stops within a token, a remote stream
is closed). The generation's own usage never arrives then; the answer reports an estimate instead (about four
characters a token, the sequence included), which is also what the request's record is charged.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import replace

from sop_llm.api.anthropic.conversation import CHARS_PER_TOKEN
from sop_llm.providers.types import Chunk, Usage
from sop_llm.services.usage.record import note_tokens


class StopSequences:
    def __init__(self, sequences: list[str], prompt_estimate: int) -> None:
        self.sequences = sequences
        self.prompt_estimate = prompt_estimate
        self.matched: str | None = None
        self._sent_chars = 0

    def _first_match(self, text: str) -> tuple[int, str] | None:
        found = [(at, s) for s in self.sequences if (at := text.find(s)) >= 0]
        return min(found, key=lambda hit: hit[0]) if found else None

    def _partial_tail(self, text: str) -> int:
        """The length of the longest end of `text` that begins some sequence (it may complete in the next chunk)."""
        return max((k for s in self.sequences for k in range(1, len(s)) if text.endswith(s[:k])), default=0)

    async def apply(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        held = ""
        try:
            async for chunk in chunks:
                text = held + chunk.text
                hit = self._first_match(text)
                if hit is not None:
                    at, self.matched = hit
                    yield Chunk(text=text[:at], finish_reason="stop", usage=self._estimate(at + len(self.matched)))
                    return
                keep = 0 if chunk.finish_reason is not None else self._partial_tail(text)
                held, text = text[len(text) - keep :], text[: len(text) - keep]
                self._sent_chars += len(text)
                if text or chunk.tool_calls or chunk.finish_reason is not None or chunk.usage is not None:
                    yield replace(chunk, text=text)
            if held:
                yield Chunk(text=held)
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    def _estimate(self, final_chars: int) -> Usage:
        output = max(1, math.ceil((self._sent_chars + final_chars) / CHARS_PER_TOKEN))
        usage = Usage(self.prompt_estimate, output)
        note_tokens(usage.prompt_tokens, usage.completion_tokens)
        return usage
