"""The contract of an execution strategy for llamacpp: how a loaded model runs a request and emits its chunks.

The provider (`llamacpp.py`) loads the weights, renders the prompt and builds the grammar; the strategy its
model's `scheduler:` names runs the request: `llamacpp_batched.py` (one context decoding many requests together)
or `llamacpp_serial.py` (an instance per request from a pool).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from sop_llm.providers.local.batching.stats import SchedulerSnapshot
from sop_llm.providers.types import AdmissionLimits, Chunk, Constraint, GenerationRequest

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

# Loads one more llama.cpp instance of the model with this context size and batch (None: the configured one); the
# provider keeps every instance it makes and closes it.
NewInstance = Callable[[int, int | None], "Llama"]


class Execution(Protocol):
    @property
    def queues_requests(self) -> bool:
        """Whether it queues and admits requests itself (GenerationProvider.queues_requests)."""
        ...

    @property
    def logprobs(self) -> bool:
        """Whether it reports tokens' log probabilities."""
        ...

    def buffer_bytes(self, kv_bytes_per_token: int, compute_bytes: int) -> int:
        """The bytes of KV cache and compute buffers it will hold, given one context's compute buffer."""
        ...

    async def load(self, executor: ThreadPoolExecutor, new_instance: NewInstance, limits: AdmissionLimits) -> None:
        """Make its instances with `new_instance` in `executor`, within the provider's admission `limits`."""
        ...

    async def aclose(self) -> None:
        """Release what it holds beyond the instances; the provider has stopped the executor already."""
        ...

    def stats(self) -> dict[str, int]:
        """The provider's counters, and its own queue or pool figures."""
        ...

    def snapshot(self) -> SchedulerSnapshot | None:
        """The batched scheduler's state for the metrics, or None when there is none."""
        ...

    def run(
        self,
        prompt: str,
        stop: list[str],
        grammar: LlamaGrammar | None,
        constraint: Constraint | None,
        request: GenerationRequest,
        per_token: bool,
    ) -> AsyncGenerator[Chunk, None]:
        """The request's chunks: its text per token (or once, at the end), then one with the finish reason and
        usage. Closing the generator stops the work."""
        ...
