"""`llamacpp`: GGUF models in-process through llama-cpp-python (the embedded default is SmolLM2-135M).

What every model shares lives here: loading the weights, the chat template, tokenizing, the grammar of a JSON
request, tools written into plain messages, and the stats. How a request then runs is the `Execution`
(`llamacpp_execution.py`) the model's `scheduler:` (models.yaml) names: `batched` (the default;
`llamacpp_batched.py`) decodes up to `parallel` requests together in one context, `serial` (`llamacpp_serial.py`)
gives each request an instance of its own.

A JSON schema becomes a GBNF grammar; one whose grammar would exceed `GRAMMAR_MAX_CHARS` (large `minItems` or
`maxLength` are spelled out as repetitions) is constrained to JSON syntax only, and the JSON pipeline checks the
schema afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from loguru import logger

from sop_llm.infra.errors import (
    BadRequestError,
    ProviderInitializationError,
    UnsupportedFeatureError,
)
from sop_llm.infra.gguf import gguf_parts, model_shape
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.local.batching.stats import SchedulerSnapshot
from sop_llm.providers.local.embedded import resolve_model_path
from sop_llm.providers.local.llamacpp_batched import BatchedExecution
from sop_llm.providers.local.llamacpp_execution import Execution
from sop_llm.providers.local.llamacpp_serial import SerialExecution
from sop_llm.providers.local.threaded import Counters
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
)

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

GRAMMAR_MAX_CHARS = 100_000
RUNTIME_OVERHEAD = 32 * 2**20  # llama.cpp's other buffers, beyond the weights, KV cache and compute buffers


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
        self._instances: list[Llama] = []
        self._executor: ThreadPoolExecutor | None = None
        self._formatter: Any = None
        self._eos_text = ""
        self._limits = AdmissionLimits()
        self.counters = Counters()
        self._execution: Execution = (
            BatchedExecution(self.name, self.model_config, self.counters, self._threads)
            if self.model_config.scheduler == "batched"
            else SerialExecution(self.name, self.model_config, self.counters)
        )

    @property
    def queues_requests(self) -> bool:
        return self._execution.queues_requests

    def set_admission_limits(self, limits: AdmissionLimits) -> None:
        self._limits = limits

    # -- lifecycle -------------------------------------------------------------------------------------
    async def load(self) -> None:
        path = resolve_model_path(self.model_config.model)
        count = self.model_config.instances
        self._executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix=f"llama-{self.name}")
        await self._execution.load(self._executor, partial(self._load_instance, path), self._limits)
        self._formatter, self._eos_text = self._chat_formatter(self._instances[0])

    def memory_estimate(self) -> int:
        """The weights' files, the KV cache the slots (or instances) will hold, and llama.cpp's buffers."""
        path = resolve_model_path(self.model_config.model)
        shape = model_shape(path)
        weights = sum(part.stat().st_size for part in gguf_parts(path) if part.exists())
        # A context's compute buffer is dominated by the logits of a full micro-batch (f32 over the vocabulary).
        compute = min(int(self.model_config.options.get("n_batch", 512)), 512) * shape.vocabulary * 4
        return weights + self._execution.buffer_bytes(shape.kv_bytes_per_token(), compute) + RUNTIME_OVERHEAD

    def _threads(self) -> int:
        return int(self.model_config.options.get("n_threads") or os.cpu_count() or 1)

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
        await self._execution.aclose()  # the batched scheduler goes before the weights it uses
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
        return self._execution.logprobs

    def stats(self) -> dict[str, int]:
        return self._execution.stats()

    def scheduler_snapshot(self) -> SchedulerSnapshot | None:
        """The batched scheduler's state for the metrics, or None for the serial one."""
        return self._execution.snapshot()

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
        async with aclosing(self._execution.run(prompt, stop, grammar, constraint, request, per_token)) as chunks:
            async for chunk in chunks:
                yield chunk

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
