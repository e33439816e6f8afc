"""`scheduler: serial` for llamacpp: a small pool of llama.cpp instances, each serving one request at a time.

A llama.cpp instance is not thread-safe, so each generation takes one instance from the pool (`instances:` in
models.yaml, default 1) and returns it only when its worker thread has stopped. Generation runs in a worker thread;
a stopping criterion checks a cancel flag on every token, so a client that disconnects, a timeout or a cancelled
task stops the loop within one token.

Every generation evaluates its whole prompt from an empty KV cache. llama-cpp-python would otherwise keep the
previous prompt's cache and evaluate only the part after the common prefix — a different batch split, hence
slightly different logits, so the same temperature-0 request could answer differently depending on what ran on
the instance before it. With the reset, the same request gives the same answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

from sop_llm.infra.errors import ProviderInitializationError
from sop_llm.providers.local.batching.sampling import sampling_settings
from sop_llm.providers.local.batching.stats import SchedulerSnapshot
from sop_llm.providers.local.context import answer_limit
from sop_llm.providers.local.threaded import Counters, ThreadStream
from sop_llm.providers.types import AdmissionLimits, Chunk, Constraint, GenerationRequest, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

    from sop_llm.infra.model_config import ModelConfig
    from sop_llm.providers.local.llamacpp_execution import NewInstance


class SerialExecution:
    """Requests wait in turn for a free instance; the instances queue nothing of their own."""

    queues_requests = False
    # llama-cpp-python's Llama keeps each step's logits only with `logits_all`, which slows every request.
    logprobs = False

    def __init__(self, name: str, config: ModelConfig, counters: Counters) -> None:
        self._name = name
        self._config = config
        self._counters = counters
        self._pool: asyncio.Queue[Llama] = asyncio.Queue()
        self._executor: ThreadPoolExecutor | None = None

    def buffer_bytes(self, kv_bytes_per_token: int, compute_bytes: int) -> int:
        """The instances map the same weights file, each with its own KV cache and compute buffer."""
        context = self._config.context_length
        return kv_bytes_per_token * context * self._config.instances + compute_bytes * self._config.instances

    async def load(
        self,
        executor: ThreadPoolExecutor,
        new_instance: NewInstance,
        limits: AdmissionLimits,
    ) -> None:
        """One instance after another, each in the executor; `limits` are for self-queueing execution only."""
        self._executor = executor
        loop = asyncio.get_running_loop()
        for _ in range(self._config.instances):
            instance = await loop.run_in_executor(executor, new_instance, self._config.context_length, None)
            self._pool.put_nowait(instance)

    async def aclose(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait()
        self._executor = None

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot(idle_instances=self._pool.qsize())

    def snapshot(self) -> SchedulerSnapshot | None:
        return None

    async def run(
        self,
        prompt: str,
        stop: list[str],
        grammar: LlamaGrammar | None,
        constraint: Constraint | None,
        request: GenerationRequest,
        per_token: bool,
    ) -> AsyncGenerator[Chunk, None]:
        if self._executor is None:
            raise ProviderInitializationError(f"model '{self._name}' is not loaded")
        executor = self._executor
        llama = await self._pool.get()
        produce = self._producer(llama, prompt, stop, grammar, request, per_token, constraint)
        stream = ThreadStream(executor, produce, lambda: self._pool.put_nowait(llama))
        # Close the bridge as soon as this generator closes (not when garbage collection gets to it), so the
        # cancel flag is set at once.
        async with aclosing(cast(AsyncGenerator[Chunk, None], aiter(stream))) as chunks:
            async for chunk in chunks:
                yield chunk

    def _producer(
        self,
        llama: Llama,
        prompt: str,
        stop: list[str],
        grammar: LlamaGrammar | None,
        request: GenerationRequest,
        per_token: bool,
        constraint: Constraint | None,
    ) -> Callable[[Callable[[Chunk], None], threading.Event], None]:
        counters = self._counters

        def produce(emit: Callable[[Chunk], None], cancel: threading.Event) -> None:
            from llama_cpp import StoppingCriteriaList

            def stop_when_cancelled(_ids: Any, _logits: Any) -> bool:
                counters.add(tokens_generated=1)
                return cancel.is_set()

            tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            max_tokens = answer_limit(self._name, len(tokens), llama.n_ctx(), request)
            counters.add(generations=1)
            llama.reset()  # type: ignore[no-untyped-call]  # evaluate the whole prompt: see the module docstring
            text: list[str] = []
            finish: Any = "stop"
            parts: Iterator[Any] = llama.create_completion(  # type: ignore[assignment]
                tokens,
                max_tokens=max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop=stop or None,
                seed=request.seed,
                grammar=grammar,
                **sampling_settings(request),
                stream=True,
                stopping_criteria=StoppingCriteriaList([stop_when_cancelled]),
            )
            for part in parts:
                if cancel.is_set():
                    counters.add(cancelled=1)
                    return
                choice = part["choices"][0]
                if choice["text"]:
                    text.append(choice["text"])
                    if per_token:
                        emit(Chunk(text=choice["text"]))
                if choice["finish_reason"]:
                    finish = choice["finish_reason"]
            if cancel.is_set():
                counters.add(cancelled=1)
                return
            generated = "".join(text)
            if finish == "length":
                completion_tokens = max_tokens
            else:
                completion_tokens = len(llama.tokenize(generated.encode("utf-8"), add_bos=False, special=False))
            usage = Usage(len(tokens), completion_tokens)
            text_out = "" if per_token else generated
            emit(Chunk(text=text_out, finish_reason=finish, usage=usage, constraint=constraint))

        return produce
