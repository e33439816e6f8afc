"""The decode loop: one llama context with `parallel` sequence slots, driven by a single thread.

At every step the thread admits waiting requests into free slots (in the order `waiting.py` gives: interactive work
first, callers in turn), preempts a running sequence when a more urgent request or a caller short of its share
waits (`policy.py`), drops cancelled requests (freeing their KV cells), then builds one batch holding the next
token of the sequences `policy.FairSteps` picks plus as much of their prompts as fits in `n_batch` (a long
prompt is fed in chunks over several steps, so running streams keep getting tokens), calls `llama_decode` once and
samples each sequence with its own sampler chain.

A preempted request keeps its sampler and what it has written; its KV cells are copied out (while the copies fit
in as many cells as the context has) and put back when it resumes, or else evaluated again from its tokens. With a
build whose kernels compute every row of a batch alike (the Makefile's), either way gives the same logits, so a
preempted answer is the answer it would have been.

Admission control is here too: a request waits at most `queue_timeout` seconds for its first slot, and at most
`max_waiting` new requests wait at once; beyond either the caller gets `OverloadedError` (429).
"""

from __future__ import annotations

import asyncio
import bisect
import ctypes
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np
from loguru import logger

from sop_llm.infra.errors import OverloadedError, ProviderError, ProviderInitializationError
from sop_llm.providers.local.batching.kv_state import restore_sequence, save_sequence
from sop_llm.providers.local.batching.policy import FairSteps, preemption_victim
from sop_llm.providers.local.batching.sampling import Sampler
from sop_llm.providers.local.batching.slots import Emit, Job, Slot, common_prefix
from sop_llm.providers.local.batching.stats import BATCH_SIZE_BUCKETS, SchedulerSnapshot
from sop_llm.providers.local.batching.waiting import WaitingJobs
from sop_llm.providers.local.threaded import Counters
from sop_llm.providers.types import Chunk, FinishReason, TokenLogprob, Usage


@dataclass(frozen=True)
class ContextShape:
    parallel: int
    context_per_slot: int
    n_batch: int
    threads: int
    max_waiting: int = 64  # new requests waiting for a slot at once
    queue_timeout: float = 60.0  # seconds a request may wait for its first slot
    per_caller: int = 0  # slots one caller may hold at once (0: no limit beyond fair shares)


class BatchScheduler:
    def __init__(
        self,
        model: Any,
        shape: ContextShape,
        tokenize: Callable[[str], list[int]],
        counters: Counters,
        name: str,
    ) -> None:
        self._shape = shape
        self._tokenize = tokenize
        self._counters = counters
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = shape.parallel * shape.context_per_slot
        params.n_batch = shape.n_batch
        params.n_ubatch = min(shape.n_batch, 512)
        params.n_seq_max = shape.parallel
        params.n_threads = params.n_threads_batch = shape.threads
        # As llama-cpp-python's Llama (the serial path) sets it: the same kernels give the same greedy answers.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        # A KV stream per slot: each holds exactly context_per_slot cells, and a step's attention for a sequence
        # spans its own cells only, not the cached prefixes of every other slot.
        params.kv_unified = False
        self._ctx = llama_cpp.llama_init_from_model(model, params)
        if not self._ctx:
            raise ProviderInitializationError(f"llama.cpp could not create the batched context for '{name}'")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(shape.n_batch, 0, 1)
        self._slots = [Slot(i) for i in range(shape.parallel)]
        self._pending = WaitingJobs()
        self._fair = FairSteps()
        self._wake = threading.Condition()
        self._closed = False
        self._clock = 0
        self._steps = 0
        self._evaluated = 0
        self._reused = 0
        self._freed_by_cancel = 0
        self._preemptions = 0
        self._peak_running = 0
        self._parked_cells = 0  # KV cells copied out for preempted requests
        self._batch_counts = [0] * (len(BATCH_SIZE_BUCKETS) + 1)
        self._batch_sum = 0
        self._name = name
        self._thread = threading.Thread(target=self._loop, name=f"llama-batch-{name}", daemon=True)
        self._thread.start()

    # -- event-loop side -------------------------------------------------------------------------------
    async def run(self, make_job: Callable[[Emit], Job]) -> AsyncGenerator[Chunk, None]:
        """Submit a request and yield its chunks. Closing the iterator cancels the request and waits until the
        decode thread has released its slot."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()
        released = loop.create_future()

        def emit(item: Chunk | BaseException | None) -> None:
            def deliver() -> None:
                if item is None and not released.done():
                    released.set_result(None)
                queue.put_nowait(item)

            try:
                loop.call_soon_threadsafe(deliver)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                job.cancel.set()

        job = make_job(emit)
        job.queued_at = time.monotonic()
        with self._wake:
            if self._closed:
                raise ProviderError("the model is being unloaded; retry")
            waiting = self._pending.new_requests()
            free = sum(1 for s in self._slots if s.job is None)  # the first `free` waiting ones are about to run
            if waiting >= self._shape.max_waiting + free:
                raise OverloadedError(
                    f"model '{self._name}' is busy: {len(self._slots)} running and {waiting} waiting "
                    f"(parallel={len(self._slots)}, LLM_MAX_QUEUED_REQUESTS={self._shape.max_waiting}); "
                    "retry shortly",
                    retry_after=1,
                )
            self._pending.push(job)
            self._wake.notify()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancel.set()
            with self._wake:
                self._wake.notify()
            if not released.done():
                await asyncio.wait([released])

    def snapshot(self) -> SchedulerSnapshot:
        running = [s.job for s in self._slots if s.job is not None]
        with self._wake:
            waiting = self._pending.by_class()
            parked = sum(1 for job in self._pending if job.parked is not None)
        return SchedulerSnapshot(
            slots=len(self._slots),
            running=len(running),
            waiting=sum(waiting.values()),
            running_by_class=dict(Counter(job.work_class for job in running)),
            waiting_by_class=waiting,
            slots_by_caller=dict(Counter(job.caller for job in running)),
            preemptions=self._preemptions,
            peak_running=self._peak_running,
            preempted_waiting=parked,
            parked_kv_cells=self._parked_cells,
            kv_cells_used=sum(len(s.cached) for s in self._slots),
            kv_cells_total=self._shape.parallel * self._shape.context_per_slot,
            steps=self._steps,
            prompt_tokens_evaluated=self._evaluated,
            prompt_tokens_reused=self._reused,
            slots_freed_by_cancel=self._freed_by_cancel,
            batch_size_counts=list(self._batch_counts),
            batch_size_sum=self._batch_sum,
        )

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    # -- decode thread ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not len(self._pending) and not self._running():
                    self._wake.wait()
                if self._closed:
                    break
                self._sweep_waiting()
            try:
                self._schedule()
                self._drop_cancelled()
                if self._running():
                    self._step()
            except Exception as exc:  # a failed step must not stop the thread every request depends on
                logger.exception("batched scheduler step failed")
                self._fail_all(f"llama.cpp generation failed: {exc}")
        self._fail_all("the model was unloaded while this request was running; retry")
        with self._wake:
            for job in list(self._pending):
                self._pending.remove(job)
                self._leave_waiting(job, ProviderError("the model was unloaded before this request could run; retry"))

    def _running(self) -> list[Slot]:
        return [s for s in self._slots if s.job is not None]

    def _sweep_waiting(self) -> None:
        """Under the lock: let cancelled requests go, and refuse those that waited too long for a first slot."""
        now = time.monotonic()
        for job in list(self._pending):
            if job.cancel.is_set():
                self._pending.remove(job)
                if job.parked is not None:  # it had started: its generation stopped
                    self._counters.add(cancelled=1)
                self._leave_waiting(job, None)
            elif job.parked is None and now - job.queued_at > self._shape.queue_timeout:
                self._pending.remove(job)
                timeout = self._shape.queue_timeout
                error = OverloadedError(
                    f"model '{self._name}' is busy: waited LLM_QUEUE_TIMEOUT={timeout:g} s for one of its "
                    f"{len(self._slots)} generation slots; retry later",
                    retry_after=timeout,
                )
                self._leave_waiting(job, error)

    def _leave_waiting(self, job: Job, error: BaseException | None) -> None:
        if job.parked is not None:
            job.parked.sampler.free()
            if job.parked.kv is not None:
                self._parked_cells -= len(job.parked.tokens)
            job.parked = None
        if error is not None:
            job.emit(error)
        job.emit(None)

    def _schedule(self) -> None:
        """Give free slots to waiting requests, preempting where `policy.preemption_victim` says so. A request
        takes the free slot whose cached tokens share the longest prefix with its own, else the one used longest
        ago (keeping recent conversations' caches for their next turn)."""
        while True:
            with self._wake:
                held = Counter(s.job.caller for s in self._slots if s.job is not None)
                job = self._pending.peek(held, self._shape.per_caller)
                if job is None:
                    return
                free = [s for s in self._slots if s.job is None]
                victim = None if free else preemption_victim(self._running(), job)
                if not free and victim is None:
                    return
                self._pending.take(job)
                if victim is None:  # reserved now, so that a request arriving meanwhile does not count it free
                    tokens = job.parked.feed if job.parked is not None else job.prompt
                    slot = max(free, key=lambda s: (common_prefix(s.cached, tokens), -s.last_used))
                    slot.job = job
            if victim is not None:
                parked = self._park(victim, job)
                with self._wake:
                    self._pending.push(parked, front=True)
                slot = victim
            self._admit(job, slot)

    def _park(self, slot: Slot, successor: Job) -> Job:
        """Preempt the slot's request for `successor`, which the slot stays reserved for; the preempted request
        is returned to wait again, with its progress."""
        job = slot.job
        assert job is not None
        budget = self._shape.parallel * self._shape.context_per_slot
        kv = save_sequence(self._ctx, slot.seq_id) if self._parked_cells + len(slot.cached) <= budget else None
        if kv is not None:
            self._parked_cells += len(slot.cached)
        job.parked = slot.park(kv)
        slot.job = successor  # its cells stay: the successor keeps the prefix it shares with them (`_admit`)
        self._preemptions += 1
        return job

    def _admit(self, job: Job, slot: Slot) -> None:
        parked, job.parked = job.parked, None
        if parked is not None:
            sampler, feed = parked.sampler, parked.feed
        else:
            try:
                sampler = Sampler(self._vocab, self._n_vocab, job.sampling)
            except ValueError as exc:
                slot.job = None
                job.emit(ProviderError(f"the request's sampler could not be built: {exc}"))
                job.emit(None)
                return
            feed = job.prompt
            self._counters.add(generations=1)
        if parked is not None and parked.kv is not None:
            self._parked_cells -= len(parked.tokens)
            restored = restore_sequence(self._ctx, self._memory, slot.seq_id, parked.kv)
            slot.cached = list(parked.tokens) if restored else []
        # Keep at least one token to evaluate: its logits give the next draw.
        reused = min(common_prefix(slot.cached, feed), len(feed) - 1)
        if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, reused, -1):
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            reused = 0
        slot.start(job, sampler, feed, reused)
        if parked is None:
            job.cached_tokens = reused
        self._peak_running = max(self._peak_running, sum(1 for s in self._slots if s.job is not None))
        if parked is not None:
            slot.resume(parked)
        self._clock += 1
        slot.admitted = self._clock
        self._reused += reused

    def _drop_cancelled(self) -> None:
        for slot in self._running():
            assert slot.job is not None
            if slot.job.cancel.is_set():
                self._freed_by_cancel += 1
                self._counters.add(cancelled=1)
                self._release(slot, clear=True)

    def _release(self, slot: Slot, clear: bool) -> None:
        job = slot.job
        if clear:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.cached.clear()
        if slot.sampler is not None:
            slot.sampler.free()
            slot.sampler = None
        slot.job = None
        self._clock += 1
        slot.last_used = self._clock
        if job is not None:
            job.emit(None)

    def _add(self, i: int, token: int, slot: Slot, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = len(slot.cached)
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = slot.seq_id
        batch.logits[i] = logits
        slot.cached.append(token)

    def _step(self) -> None:
        rows: list[tuple[Slot, int]] = []
        n = 0
        running = self._fair.members(self._running())
        in_batch: set[int] = set()
        for slot in running:
            if slot.next_token is not None:
                self._add(n, slot.next_token, slot, True)
                rows.append((slot, n))
                in_batch.add(slot.seq_id)
                slot.next_token = None
                n += 1
        for slot in running:
            if not slot.prefilling or n >= self._shape.n_batch:
                continue
            feed = slot.feed
            take = min(len(feed) - slot.fed, self._shape.n_batch - n)
            in_batch.add(slot.seq_id)
            for token in feed[slot.fed : slot.fed + take]:
                slot.fed += 1
                last = slot.fed == len(feed)
                self._add(n, token, slot, last)
                if last:
                    rows.append((slot, n))
                n += 1
            self._evaluated += take
        self._batch.n_tokens = n
        self._batch_counts[bisect.bisect_left(BATCH_SIZE_BUCKETS, len(in_batch))] += 1
        self._batch_sum += len(in_batch)
        self._steps += 1
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status == 1 and self._evict_idle_caches():  # no room for the batch: drop free slots' cached prefixes
            status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status != 0:
            self._fail_all(f"llama.cpp could not decode the batch (status {status}); retry")
            return
        for slot, row in rows:
            assert slot.job is not None and slot.sampler is not None
            distribution = self._log_softmax(row) if slot.job.logprobs is not None else None
            token = slot.sampler.sample(self._ctx, row)
            if distribution is not None and not llama_cpp.llama_vocab_is_eog(self._vocab, token):
                slot.logprobs.append(self._token_logprob(distribution, token, slot.job.logprobs or 0))
            self._on_token(slot, token)

    def _log_softmax(self, row: int) -> np.ndarray:
        """The model's log probabilities over the vocabulary at batch row `row` (before any sampling setting)."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, row), shape=(self._n_vocab,))
        shifted = logits.astype(np.float64) - float(logits.max())
        return shifted - float(np.log(np.exp(shifted).sum()))

    def _token_logprob(self, distribution: np.ndarray, token: int, alternatives: int) -> TokenLogprob:
        top: tuple[tuple[str, bytes, float], ...] = ()
        if alternatives:
            best = np.argpartition(distribution, -alternatives)[-alternatives:]
            best = best[np.argsort(distribution[best])[::-1]]
            top = tuple(self._described(int(t), distribution) for t in best)
        text, raw, logprob = self._described(token, distribution)
        return TokenLogprob(text, raw, logprob, top)

    def _described(self, token: int, distribution: np.ndarray) -> tuple[str, bytes, float]:
        raw = self._piece(token)
        return raw.decode("utf-8", errors="replace"), raw, float(distribution[token])

    def _evict_idle_caches(self) -> bool:
        idle = [s for s in self._slots if s.job is None and s.cached]
        for slot in idle:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.cached.clear()
        return bool(idle)

    def _fail_all(self, message: str) -> None:
        for slot in self._running():
            assert slot.job is not None
            slot.job.emit(ProviderError(message))  # one exception object per request: each is raised in its own task
            self._release(slot, clear=True)

    def _on_token(self, slot: Slot, token: int) -> None:
        job = slot.job
        assert job is not None
        slot.generated += 1
        self._counters.add(tokens_generated=1)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop", slot.text.flush())
            return
        out, stopped = slot.text.feed(self._piece(token))
        if stopped:
            self._finish(slot, "stop", out)
        elif slot.generated >= job.max_tokens:
            self._finish(slot, "length", out + slot.text.flush())
        else:
            if out and job.per_token:
                job.emit(Chunk(text=out, logprobs=slot.take_logprobs()))
            slot.next_token = token

    def _finish(self, slot: Slot, reason: FinishReason, tail: str) -> None:
        job = slot.job
        assert job is not None
        text = slot.text.text
        completion_tokens = job.max_tokens if reason == "length" else len(self._tokenize(text))
        usage = Usage(len(job.prompt), completion_tokens, job.cached_tokens)
        if job.per_token:
            if tail:
                job.emit(Chunk(text=tail, logprobs=slot.take_logprobs()))
            final = Chunk(finish_reason=reason, usage=usage, constraint=job.constraint, logprobs=slot.take_logprobs())
        else:
            logprobs = slot.take_logprobs()
            final = Chunk(text=text, finish_reason=reason, usage=usage, constraint=job.constraint, logprobs=logprobs)
        job.emit(final)
        self._release(slot, clear=False)

    def _piece(self, token: int) -> bytes:
        buffer = (ctypes.c_char * 64)()
        size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if size < 0:
            buffer = (ctypes.c_char * -size)()
            size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:size]
