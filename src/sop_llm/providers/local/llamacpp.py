"""`llamacpp`: GGUF models in-process through llama-cpp-python (the embedded default is SmolLM2-135M).

A llama.cpp instance is not thread-safe, so each generation takes one instance from a small pool
(`instances:` in models.yaml, default 1) and returns it only when its worker thread has stopped.
Generation runs in a worker thread; a stopping criterion checks a cancel flag on every token, so a client
that disconnects, a timeout or a cancelled task stops the loop within one token.

Every generation evaluates its whole prompt from an empty KV cache. llama-cpp-python would otherwise keep the
previous prompt's cache and evaluate only the part after the common prefix — a different batch split, hence
slightly different logits, so the same temperature-0 request could answer differently depending on what ran on
the instance before it. With the reset, the same request gives the same answer.

With `scheduler: batched` (models.yaml; the default) one context decodes up to `parallel` requests together
instead, admitting callers in turn and interactive work first: see `batching/scheduler.py`. There a request reuses
the KV cache a free slot holds for the same prompt prefix; with the Makefile's llama.cpp build (no kernels whose
arithmetic depends on the batch) a cold prefix, a reused one and a busy batch give the same logits.

A JSON schema becomes a GBNF grammar; one whose grammar would exceed `GRAMMAR_MAX_CHARS` (large `minItems` or
`maxLength` are spelled out as repetitions) is constrained to JSON syntax only, and the JSON pipeline checks the
schema afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from loguru import logger

from sop_llm.infra.errors import (
    BadRequestError,
    ProviderInitializationError,
    UnsupportedFeatureError,
)
from sop_llm.infra.gguf import gguf_parts, model_shape
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.local.batching.sampling import SamplingParams, sampling_settings
from sop_llm.providers.local.batching.slots import Job
from sop_llm.providers.local.batching.stats import SchedulerSnapshot
from sop_llm.providers.local.context import answer_limit
from sop_llm.providers.local.embedded import resolve_model_path
from sop_llm.providers.local.threaded import Counters, ThreadStream
from sop_llm.providers.local.tools import ToolPlan, parse_tool_call, plain_history, plan_tools
from sop_llm.providers.registry import register_provider
from sop_llm.providers.types import (
    AdmissionLimits,
    Capability,
    Chunk,
    Completion,
    Constraint,
    GenerationRequest,
    Health,
    JsonMode,
    Usage,
)

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

    from sop_llm.providers.local.batching.scheduler import BatchScheduler

GRAMMAR_MAX_CHARS = 100_000
BATCHED_SPARE_CTX = 256  # the context of the instance that only lends its weights and tokenizer to the scheduler
BATCHED_SPARE_BATCH = 8  # and its batch: it never decodes, so its compute buffer is kept small
MAX_DEFAULT_PARALLEL = 8  # on a CPU a step's time grows with its sequences: more slots add little throughput
KV_SHARE_OF_MEMORY = 4  # the default slots' KV cache stays within 1/4 of the machine's memory
RUNTIME_OVERHEAD = 32 * 2**20  # llama.cpp's other buffers, beyond the weights, KV cache and compute buffers


def default_parallel(kv_bytes_per_token: int, context_length: int, memory_bytes: int) -> int:
    """Slots for a model whose config names none: as many as fit in a quarter of memory, from 1 to 8."""
    per_slot = max(1, kv_bytes_per_token * context_length)
    return int(max(1, min(MAX_DEFAULT_PARALLEL, memory_bytes // KV_SHARE_OF_MEMORY // per_slot)))


@register_provider("llamacpp")
class LlamaCppProvider(GenerationProvider):
    """Options (models.yaml `options:`): `n_threads` (default: all cores), `n_batch`, `chat_template`."""

    capabilities = frozenset(
        {
            Capability.TEXT_GENERATION,
            Capability.CHAT,
            Capability.STREAMING,
            Capability.JSON_SCHEMA,
            Capability.FUNCTION_CALLING,
        }
    )
    local = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: asyncio.Queue[Llama] = asyncio.Queue()
        self._instances: list[Llama] = []
        self._executor: ThreadPoolExecutor | None = None
        self._formatter: Any = None
        self._eos_text = ""
        self._scheduler: BatchScheduler | None = None
        self._limits = AdmissionLimits()
        self.parallel = self.model_config.parallel or 0  # resolved at load when the config names none
        self.counters = Counters()

    @property
    def queues_requests(self) -> bool:
        return self.model_config.scheduler == "batched"

    def set_admission_limits(self, limits: AdmissionLimits) -> None:
        self._limits = limits

    # -- lifecycle -------------------------------------------------------------------------------------
    async def load(self) -> None:
        path = resolve_model_path(self.model_config.model)
        count = self.model_config.instances
        self._executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix=f"llama-{self.name}")
        loop = asyncio.get_running_loop()
        if self.model_config.scheduler == "batched":
            # The instance gives the weights, the tokenizer and the chat template; the scheduler's own context
            # holds the KV cache of every slot, so the instance's context is kept minimal and never decodes.
            await loop.run_in_executor(self._executor, self._load_batched, path)
        else:
            for _ in range(count):
                instance = await loop.run_in_executor(
                    self._executor, self._load_instance, path, self.model_config.context_length
                )
                self._pool.put_nowait(instance)
        self._formatter, self._eos_text = self._chat_formatter(self._instances[0])

    def memory_estimate(self) -> int:
        """The weights' files, the KV cache the slots (or instances) will hold, and llama.cpp's buffers."""
        import psutil

        path = resolve_model_path(self.model_config.model)
        shape = model_shape(path)
        per_token = shape.kv_bytes_per_token()
        weights = sum(part.stat().st_size for part in gguf_parts(path) if part.exists())
        context = self.model_config.context_length
        # A context's compute buffer is dominated by the logits of a full micro-batch (f32 over the vocabulary).
        compute = min(int(self.model_config.options.get("n_batch", 512)), 512) * shape.vocabulary * 4
        if self.model_config.scheduler == "batched":
            slots = self.parallel or default_parallel(per_token, context, psutil.virtual_memory().total)
            kv = per_token * (slots * context + BATCHED_SPARE_CTX)
        else:  # the instances map the same weights file, each with its own KV cache and compute buffer
            kv = per_token * context * self.model_config.instances
            compute *= self.model_config.instances
        return weights + kv + compute + RUNTIME_OVERHEAD

    def _threads(self) -> int:
        return int(self.model_config.options.get("n_threads") or os.cpu_count() or 1)

    def _load_batched(self, path: str) -> None:
        """In the load thread, keeping what it made on self even if the load is cancelled meanwhile: `aclose`
        waits for this thread, then frees the scheduler before the weights it uses."""
        instance = self._load_instance(path, BATCHED_SPARE_CTX, BATCHED_SPARE_BATCH)
        self._scheduler = self._start_scheduler(instance)

    def _start_scheduler(self, instance: Llama) -> BatchScheduler:
        from sop_llm.providers.local.batching.scheduler import BatchScheduler, ContextShape

        if not self.parallel:
            import psutil

            memory = psutil.virtual_memory().total
            per_token = model_shape(instance.model_path).kv_bytes_per_token()
            self.parallel = default_parallel(per_token, self.model_config.context_length, memory)
        shape = ContextShape(
            parallel=self.parallel,
            context_per_slot=self.model_config.context_length,
            n_batch=int(self.model_config.options.get("n_batch", 512)),
            threads=self._threads(),
            max_waiting=self._limits.max_waiting,
            queue_timeout=self._limits.queue_timeout,
            per_caller=self._limits.per_caller,
        )

        def tokenize(text: str) -> list[int]:
            return instance.tokenize(text.encode("utf-8"), add_bos=False, special=False)

        return BatchScheduler(instance.model, shape, tokenize, self.counters, self.name)

    def _load_instance(self, path: str, n_ctx: int, n_batch: int | None = None) -> Llama:
        from llama_cpp import Llama

        if not os.path.isfile(path):
            raise ProviderInitializationError(
                f"GGUF file '{path}' for model '{self.name}' does not exist; give a local .gguf path "
                "or an embedded: model"
            )
        options = self.model_config.options
        threads = self._threads()
        try:
            instance = Llama(
                model_path=path,
                n_ctx=n_ctx,
                # Prompt evaluation uses n_threads_batch, which llama-cpp-python would otherwise set to every core:
                # several processes on one machine then spin against each other in OpenMP barriers.
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=n_batch or int(options.get("n_batch", 512)),
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ProviderInitializationError(f"llama.cpp could not load '{path}': {exc}") from exc
        self._instances.append(instance)  # here, not in `load`: a cancelled load's instance is still closed
        return instance

    def _chat_formatter(self, llama: Llama) -> tuple[Any, str]:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.model_config.options.get("chat_template") or llama.metadata.get("tokenizer.chat_template")
        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "ignore")
        bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "ignore")
        if not template:
            return None, eos
        return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos), eos

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:  # a load still running in it (its task cancelled) finishes before anything is freed
            await asyncio.to_thread(executor.shutdown, True)
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.close)
            self._scheduler = None
        while not self._pool.empty():
            self._pool.get_nowait()
        for instance in self._instances:
            instance.close()
        self._instances.clear()

    async def health(self) -> Health:
        return Health(ok=bool(self._instances), detail=f"{len(self._instances)} instance(s) loaded")

    def _vocabulary(self) -> Llama:
        """An instance for its tokenizer: llama.cpp tokenizes on the model's vocabulary, not on a context, so this
        is safe beside a generation running on the same instance."""
        if not self._instances:
            raise ProviderInitializationError(f"model '{self.name}' is not loaded")
        return self._instances[0]

    async def tokenize(self, request: GenerationRequest, special: bool = True) -> list[int]:
        llama = self._vocabulary()
        prompt, _ = self._render(self._plain(request)[0])
        return list(llama.tokenize(prompt.encode("utf-8"), add_bos=special, special=special))

    async def detokenize(self, tokens: list[int]) -> str:
        llama = self._vocabulary()
        size = llama.n_vocab()
        bad = next((i for i, token in enumerate(tokens) if not 0 <= token < size), None)
        if bad is not None:
            raise BadRequestError(
                f"tokens[{bad}] = {tokens[bad]} is not a token of model '{self.name}' (ids 0 to {size - 1})",
                param=f"tokens[{bad}]",
            )
        return bytes(llama.detokenize(tokens, special=True)).decode("utf-8", "replace")

    @property
    def logprobs(self) -> bool:
        """The batched scheduler reads each step's logits; the serial one (llama-cpp-python's Llama) keeps them only
        with `logits_all`, which slows every request."""
        return self.model_config.scheduler == "batched"

    def stats(self) -> dict[str, int]:
        if self._scheduler is None:
            return self.counters.snapshot(idle_instances=self._pool.qsize())
        s = self._scheduler.snapshot()
        return self.counters.snapshot(
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

    def scheduler_snapshot(self) -> SchedulerSnapshot | None:
        """The batched scheduler's state for the metrics, or None for the serial one."""
        return self._scheduler.snapshot() if self._scheduler is not None else None

    # -- generation ------------------------------------------------------------------------------------
    @staticmethod
    def _plain(request: GenerationRequest) -> tuple[GenerationRequest, ToolPlan | None]:
        """The request as the model reads it: tool definitions and calls written into plain messages."""
        if not request.tools:
            return request, None
        if request.tool_choice == "none":
            return replace(request, messages=plain_history(request.messages or []), tools=None), None
        plan = plan_tools(request.messages or [], request.tools, request.tool_choice)
        json_mode = JsonMode(plan.forced_schema) if plan.forced_schema is not None else None
        return replace(request, messages=plan.messages, json_mode=json_mode, tools=None), plan

    async def generate(self, request: GenerationRequest) -> Completion:
        request, plan = self._plain(request)
        # One chunk with the whole text: the event loop is not woken for every token.
        last = Chunk()
        async for chunk in self._run(request, per_token=False):
            last = chunk
        assert last.finish_reason is not None and last.usage is not None
        tool_calls = parse_tool_call(last.text, plan.tool_names) if plan is not None else None
        if tool_calls:
            return Completion(text="", finish_reason="tool_calls", usage=last.usage, tool_calls=tool_calls)
        return Completion(last.text, last.finish_reason, last.usage, constraint=last.constraint, logprobs=last.logprobs)

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        if request.tools:
            return self._stream_with_tools(request)
        return self._run(request, per_token=True)

    async def _stream_with_tools(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """A tool call is only known once the answer is complete, so it is sent as one delta."""
        completion = await self.generate(request)
        if completion.tool_calls:
            yield Chunk(tool_calls=[{"index": i, **call} for i, call in enumerate(completion.tool_calls)])
        elif completion.text:
            yield Chunk(text=completion.text)
        yield Chunk(finish_reason=completion.finish_reason, usage=completion.usage)

    async def _run(self, request: GenerationRequest, per_token: bool) -> AsyncIterator[Chunk]:
        if self._executor is None:
            raise ProviderInitializationError(f"model '{self.name}' is not loaded")
        prompt, stop = self._render(request)
        self._check_logit_bias(request)
        grammar, constraint = self._grammar(request)
        if self._scheduler is not None:
            async with aclosing(
                self._run_batched(self._scheduler, prompt, stop, grammar, constraint, request, per_token)
            ) as batched:
                async for chunk in batched:
                    yield chunk
            return
        llama = await self._pool.get()
        produce = self._producer(llama, prompt, stop, grammar, request, per_token, constraint)
        stream = ThreadStream(self._executor, produce, lambda: self._pool.put_nowait(llama))
        # Close the bridge as soon as this generator closes (not when garbage collection gets to it), so the
        # cancel flag is set at once.
        async with aclosing(cast(AsyncGenerator[Chunk, None], aiter(stream))) as chunks:
            async for chunk in chunks:
                yield chunk

    def _run_batched(
        self,
        scheduler: BatchScheduler,
        prompt: str,
        stop: list[str],
        grammar: LlamaGrammar | None,
        constraint: Constraint | None,
        request: GenerationRequest,
        per_token: bool,
    ) -> AsyncGenerator[Chunk, None]:
        tokens = self._instances[0].tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        max_tokens = answer_limit(self.name, len(tokens), self.model_config.context_length, request)
        sampling = SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            grammar=(grammar._grammar, grammar._root) if grammar is not None else None,
            **sampling_settings(request),
        )
        return scheduler.run(
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

    def _check_logit_bias(self, request: GenerationRequest) -> None:
        """llama.cpp indexes its logits with these ids unchecked: one outside the vocabulary must not reach it."""
        vocabulary = self._instances[0].n_vocab()
        outside = [token for token in request.logit_bias or {} if not 0 <= token < vocabulary]
        if outside:
            raise BadRequestError(
                f"logit_bias: token id {outside[0]} is outside model '{self.name}''s vocabulary of {vocabulary} "
                "tokens; POST /tokenize gives a text's ids",
                param="logit_bias",
            )

    def _render(self, request: GenerationRequest) -> tuple[str, list[str]]:
        if request.prompt is not None:
            return request.prompt, list(request.stop)
        if self._formatter is None:
            raise UnsupportedFeatureError(
                f"model '{self.name}' has no chat template; use /v1/completions or set options.chat_template",
            )
        messages = [
            {k: v for k, v in (("role", m.role), ("content", m.content or "")) if v is not None}
            for m in request.messages or []
        ]
        try:
            result = self._formatter(messages=messages)
        except Exception as exc:  # jinja raises for message orders the template forbids
            raise BadRequestError(f"the messages do not fit the model's chat template: {exc}") from exc
        return result.prompt, [*request.stop, self._eos_text]

    def _grammar(self, request: GenerationRequest) -> tuple[LlamaGrammar | None, Constraint | None]:
        """The grammar for a JSON request, and how much it constrains: the schema, or JSON syntax only when
        llama.cpp cannot compile the schema (the JSON pipeline then still validates against it)."""
        if request.json_mode is None:
            return None, None
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if request.json_mode.schema is not None:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            try:
                rules = json_schema_to_gbnf(json.dumps(request.json_mode.schema))
            except Exception as exc:  # the converter raises plain exceptions for unsupported keywords
                logger.info(
                    "model {}: schema not compilable to a grammar ({}); constraining to JSON only", self.name, exc
                )
            else:
                if len(rules) <= GRAMMAR_MAX_CHARS:
                    return LlamaGrammar.from_string(rules, verbose=False), "schema"
                logger.info(
                    "model {}: the schema's grammar is {} characters (limit {}); constraining to JSON only",
                    self.name,
                    len(rules),
                    GRAMMAR_MAX_CHARS,
                )
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False), "json"

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
        counters = self.counters

        def produce(emit: Callable[[Chunk], None], cancel: threading.Event) -> None:
            from llama_cpp import StoppingCriteriaList

            def stop_when_cancelled(_ids: Any, _logits: Any) -> bool:
                counters.add(tokens_generated=1)
                return cancel.is_set()

            tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            max_tokens = answer_limit(self.name, len(tokens), llama.n_ctx(), request)
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
