"""`scheduler: batched` for llamacpp (the default): one context decodes up to `parallel` requests together.

The scheduler (`batching/scheduler.py`) admits callers in turn and interactive work first. There a request reuses
the KV cache a free slot holds for the same prompt prefix; with the Makefile's llama.cpp build (no kernels whose
arithmetic depends on the batch) a cold prefix, a reused one and a busy batch give the same logits.

The model's one instance gives the weights, the tokenizer and the chat template; the scheduler's own context holds
the KV cache of every slot, so the instance's context is kept minimal and never decodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from sop_llm.infra.errors import ProviderInitializationError
from sop_llm.infra.gguf import model_shape
from sop_llm.providers.local.batching.sampling import SamplingParams, sampling_settings
from sop_llm.providers.local.batching.slots import Job
from sop_llm.providers.local.batching.stats import SchedulerSnapshot
from sop_llm.providers.local.context import answer_limit
from sop_llm.providers.local.threaded import Counters
from sop_llm.providers.types import AdmissionLimits, Chunk, Constraint, GenerationRequest

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

    from sop_llm.infra.model_config import ModelConfig
    from sop_llm.providers.local.batching.scheduler import BatchScheduler
    from sop_llm.providers.local.llamacpp_execution import NewInstance

BATCHED_SPARE_CTX = 256  # the context of the instance that only lends its weights and tokenizer to the scheduler
BATCHED_SPARE_BATCH = 8  # and its batch: it never decodes, so its compute buffer is kept small
MAX_DEFAULT_PARALLEL = 8  # on a CPU a step's time grows with its sequences: more slots add little throughput
KV_SHARE_OF_MEMORY = 4  # the default slots' KV cache stays within 1/4 of the machine's memory


def default_parallel(kv_bytes_per_token: int, context_length: int, memory_bytes: int) -> int:
    """Slots for a model whose config names none: as many as fit in a quarter of memory, from 1 to 8."""
    per_slot = max(1, kv_bytes_per_token * context_length)
    return int(max(1, min(MAX_DEFAULT_PARALLEL, memory_bytes // KV_SHARE_OF_MEMORY // per_slot)))


class BatchedExecution:
    """The scheduler queues and admits requests itself, within the admission limits given at load."""

    queues_requests = True
    logprobs = True  # the scheduler reads each step's logits

    def __init__(self, name: str, config: ModelConfig, counters: Counters, threads: Callable[[], int]) -> None:
        """`threads()`: the CPU threads a decode step uses, read when the scheduler starts."""
        self._name = name
        self._config = config
        self._counters = counters
        self._threads = threads
        self._instance: Llama | None = None
        self._scheduler: BatchScheduler | None = None
        self.parallel = config.parallel or 0  # resolved at load when the config names none

    def buffer_bytes(self, kv_bytes_per_token: int, compute_bytes: int) -> int:
        """The KV cache of every slot and of the spare instance, and one compute buffer."""
        import psutil

        context = self._config.context_length
        slots = self.parallel or default_parallel(kv_bytes_per_token, context, psutil.virtual_memory().total)
        return kv_bytes_per_token * (slots * context + BATCHED_SPARE_CTX) + compute_bytes

    async def load(
        self,
        executor: ThreadPoolExecutor,
        new_instance: NewInstance,
        limits: AdmissionLimits,
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(executor, self._load, new_instance, limits)

    def _load(self, new_instance: NewInstance, limits: AdmissionLimits) -> None:
        """In the load thread, keeping what it made on self even if the load is cancelled meanwhile: `aclose`
        waits for this thread, then frees the scheduler before the weights it uses."""
        self._instance = new_instance(BATCHED_SPARE_CTX, BATCHED_SPARE_BATCH)
        self._scheduler = self._start_scheduler(self._instance, limits)

    def _start_scheduler(self, instance: Llama, limits: AdmissionLimits) -> BatchScheduler:
        from sop_llm.providers.local.batching.scheduler import BatchScheduler, ContextShape

        if not self.parallel:
            import psutil

            memory = psutil.virtual_memory().total
            per_token = model_shape(instance.model_path).kv_bytes_per_token()
            self.parallel = default_parallel(per_token, self._config.context_length, memory)
        shape = ContextShape(
            parallel=self.parallel,
            context_per_slot=self._config.context_length,
            n_batch=int(self._config.options.get("n_batch", 512)),
            threads=self._threads(),
            max_waiting=limits.max_waiting,
            queue_timeout=limits.queue_timeout,
            per_caller=limits.per_caller,
        )

        def tokenize(text: str) -> list[int]:
            return instance.tokenize(text.encode("utf-8"), add_bos=False, special=False)

        return BatchScheduler(instance.model, shape, tokenize, self._counters, self._name)

    async def aclose(self) -> None:
        """Frees the scheduler's context; the provider closes the instance after it."""
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.close)
            self._scheduler = None
        self._instance = None

    def stats(self) -> dict[str, int]:
        if self._scheduler is None:  # not loaded: no instance idle, as the serial pool would say
            return self._counters.snapshot(idle_instances=0)
        s = self._scheduler.snapshot()
        return self._counters.snapshot(
            slots=s.slots,
            idle_slots=s.slots - s.running,
            running_sequences=s.running,
            peak_running_sequences=s.peak_running,
            waiting_sequences=s.waiting,
            preemptions=s.preemptions,
            preempted_waiting=s.preempted_waiting,
            parked_kv_cells=s.parked_kv_cells,
            kv_cells_used=s.kv_cells_used,
            prompt_tokens_evaluated=s.prompt_tokens_evaluated,
            prompt_tokens_reused=s.prompt_tokens_reused,
            slots_freed_by_cancel=s.slots_freed_by_cancel,
        )

    def snapshot(self) -> SchedulerSnapshot | None:
        return self._scheduler.snapshot() if self._scheduler is not None else None

    def run(
        self,
        prompt: str,
        stop: list[str],
        grammar: LlamaGrammar | None,
        constraint: Constraint | None,
        request: GenerationRequest,
        per_token: bool,
    ) -> AsyncGenerator[Chunk, None]:
        """Tokenizes and checks the prompt's length at once (a refusal raises here, before any chunk), then
        hands the request to the scheduler."""
        if self._scheduler is None or self._instance is None:
            raise ProviderInitializationError(f"model '{self._name}' is not loaded")
        tokens = self._instance.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        max_tokens = answer_limit(self._name, len(tokens), self._config.context_length, request)
        sampling = SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            grammar=(grammar._grammar, grammar._root) if grammar is not None else None,
            **sampling_settings(request),
        )
        return self._scheduler.run(
            lambda emit: Job(
                tokens,
                max_tokens,
                stop,
                sampling,
                per_token,
                constraint,
                emit,
                request.logprobs,
                caller=request.caller or "",
                work_class=int(request.work_class),
            )
        )
