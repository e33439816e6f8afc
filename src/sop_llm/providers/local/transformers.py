"""`transformers`: Hugging Face causal language models in-process — a hub id, a local folder, or a GGUF file
(such as the embedded SmolLM2, which transformers dequantizes on load).

As in `llamacpp`, each generation takes one model instance from a pool (`instances:`, default 1) and runs
`model.generate` in a worker thread bridged by `ThreadStream`. A stopping criterion runs after every token: it
decodes the token, cuts the text at the first stop string, emits it when streaming, and stops `generate` when
a stop string appeared or the cancel flag is set, so a disconnect or a timeout stops the work within one token.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import threading
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sop_llm.infra.errors import (
    BadRequestError,
    ProviderInitializationError,
    UnsupportedFeatureError,
)
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.local.context import answer_limit
from sop_llm.providers.local.embedded import resolve_model_path
from sop_llm.providers.local.hf_loading import model_construction
from sop_llm.providers.local.threaded import Counters, ThreadStream
from sop_llm.providers.registry import register_provider
from sop_llm.providers.types import Capability, Chunk, Completion, FinishReason, GenerationRequest, Health, Usage

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _return_freed_memory() -> None:
    """glibc keeps freed heap pages (most weight tensors are below its mmap threshold): hand them back to the
    system, so that RSS and the memory guard see what quantizing or unloading saved."""
    gc.collect()
    with suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass(frozen=True, slots=True)
class _Instance:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    max_positions: int  # the smaller of the configured context_length and the model's own limit
    eos_ids: frozenset[int]


class _Decoder:
    """A stopping criterion for `model.generate`, called after each new token (see the module docstring)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_tail: list[int],
        stop: list[str],
        cancel: threading.Event,
        counters: Counters,
        emit: Callable[[str], None] | None,
    ) -> None:
        self._tokenizer, self._stop, self._cancel, self._counters, self._emit = tokenizer, stop, cancel, counters, emit
        # Incremental detokenization: decode from a few tokens back, so leading spaces and multi-byte characters
        # split across tokens come out right; `text` grows only by complete characters.
        self._ids = list(prompt_tail)
        self._prefix, self._read = 0, len(prompt_tail)
        self.text = ""
        self._sent = 0
        self.steps = 0
        self.last_id = -1
        self.stopped = False  # a stop string appeared

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        self.steps += 1
        self._counters.add(tokens_generated=1)
        self.last_id = int(input_ids[0, -1])
        self._ids.append(self.last_id)
        self._advance(final=False)
        return torch.full((input_ids.shape[0],), self.stopped or self._cancel.is_set(), dtype=torch.bool)

    def finish(self) -> None:
        self._advance(final=True)

    def _advance(self, final: bool) -> None:
        if self.stopped:
            return
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
        found = [at for at in (self.text.find(s, self._sent) for s in self._stop) if at >= 0]
        if found:
            self.text, self.stopped = self.text[: min(found)], True
        # Hold back a tail that may be the start of a stop string; it is released once it cannot be.
        held = 0 if final or self.stopped else self._partial_stop()
        end = len(self.text) - held
        if end > self._sent:
            if self._emit is not None:
                self._emit(self.text[self._sent : end])
            self._sent = end

    def _decode(self, ids: list[int]) -> str:
        return cast(str, self._tokenizer.decode(ids, skip_special_tokens=True))

    def _partial_stop(self) -> int:
        return max((k for s in self._stop for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)


@register_provider("transformers")
class TransformersProvider(GenerationProvider):
    """Options (models.yaml `options:`): `device` (default cpu), `torch_dtype` (e.g. bfloat16, auto),
    `quantize_8bit` (dynamic int8 Linear layers, CPU only), `threads` (torch.set_num_threads: process-wide),
    `chat_template` (overrides the tokenizer's)."""

    capabilities = frozenset({Capability.TEXT_GENERATION, Capability.CHAT, Capability.STREAMING})
    local = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: asyncio.Queue[_Instance] = asyncio.Queue()
        self._instances: list[_Instance] = []
        self._executor: ThreadPoolExecutor | None = None
        self.counters = Counters()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def load(self) -> None:
        count = self.model_config.instances
        self._executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix=f"transformers-{self.name}")
        loop = asyncio.get_running_loop()
        try:
            for _ in range(count):
                instance = await loop.run_in_executor(self._executor, self._load_instance)
                self._instances.append(instance)
                self._pool.put_nowait(instance)
        except BaseException:
            await self.aclose()
            raise

    def _source(self) -> tuple[str, dict[str, Any]]:
        """The name for `from_pretrained` and the keyword arguments that say where its files are."""
        path = resolve_model_path(self.model_config.model)
        if not (path.endswith(".gguf") or path.startswith(("/", ".", "~")) or os.path.exists(path)):
            return path, {}  # a hub id
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            raise ProviderInitializationError(
                f"model path '{path}' for model '{self.name}' does not exist; give an existing local folder or "
                ".gguf file, a Hugging Face hub id, or an embedded: model"
            )
        if os.path.isfile(path):  # a GGUF file: transformers reads it from its folder
            folder, filename = os.path.split(path)
            return folder, {"gguf_file": filename, "local_files_only": True}
        return path, {"local_files_only": True}

    def _load_instance(self) -> _Instance:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, where = self._source()
        options = self.model_config.options
        device = str(options.get("device", "cpu"))
        if options.get("quantize_8bit") and device != "cpu":
            raise ProviderInitializationError(f"model '{self.name}': quantize_8bit is CPU-only; set device: cpu")
        dtype: Any = options.get("torch_dtype")
        if dtype not in (None, "auto"):
            dtype = getattr(torch, str(dtype), None)
            if not isinstance(dtype, torch.dtype):
                raise ProviderInitializationError(
                    f"model '{self.name}': unknown torch_dtype '{options['torch_dtype']}'"
                )
        if "threads" in options:
            torch.set_num_threads(int(options["threads"]))
        try:
            with model_construction:
                tokenizer = AutoTokenizer.from_pretrained(source, **where)
                model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=device, **where)
        except Exception as exc:  # transformers raises many types (OSError, ValueError, ImportError...) for this
            raise ProviderInitializationError(
                f"transformers could not load '{self.model_config.model}' for model '{self.name}': {exc}. "
                "A hub id needs network access or a copy in the Hugging Face cache; offline, use a local path "
                "or an embedded: model"
            ) from exc
        if options.get("quantize_8bit"):
            # The eager API is deprecated in favour of torchao (not installed).
            with model_construction, warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"torch\.(ao\.quantization|quantize_per)")
                torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
                )
            _return_freed_memory()
        own_limit = getattr(model.config, "max_position_embeddings", None) or self.model_config.context_length
        eos = model.generation_config.eos_token_id
        eos_ids = frozenset([eos] if isinstance(eos, int) else eos or [])
        return _Instance(model, tokenizer, min(self.model_config.context_length, int(own_limit)), eos_ids)

    async def aclose(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait()
        self._instances.clear()
        if self._executor is not None:
            # Generations have stopped by now (LocalModels drains them); a load still running is abandoned.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        _return_freed_memory()

    async def health(self) -> Health:
        int8 = " (int8 dynamic)" if self.model_config.options.get("quantize_8bit") else ""
        return Health(ok=bool(self._instances), detail=f"{len(self._instances)} instance(s) loaded{int8}")

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot(idle_instances=self._pool.qsize())

    # -- generation ------------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> Completion:
        # One chunk with the whole text: the event loop is not woken for every token.
        last = Chunk()
        async for chunk in self._run(request, per_token=False):
            last = chunk
        assert last.finish_reason is not None and last.usage is not None
        return Completion(text=last.text, finish_reason=last.finish_reason, usage=last.usage)

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        return self._run(request, per_token=True)

    async def _run(self, request: GenerationRequest, per_token: bool) -> AsyncIterator[Chunk]:
        if self._executor is None or not self._instances:
            raise ProviderInitializationError(f"model '{self.name}' is not loaded")
        prompt = self._render(request)
        instance = await self._pool.get()
        produce = self._producer(instance, prompt, request, per_token)
        stream = ThreadStream(self._executor, produce, lambda: self._pool.put_nowait(instance))
        # Closing this generator closes the bridge at once: the worker has stopped when aclose() returns.
        async with aclosing(cast(AsyncGenerator[Chunk, None], aiter(stream))) as chunks:
            async for chunk in chunks:
                yield chunk

    def _render(self, request: GenerationRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        tokenizer = self._instances[0].tokenizer
        template = self.model_config.options.get("chat_template")
        if not (template or tokenizer.chat_template):
            raise UnsupportedFeatureError(
                f"model '{self.name}' has no chat template; use /v1/completions or set options.chat_template",
            )
        messages = [{"role": m.role, "content": m.content or ""} for m in request.messages or []]
        try:  # jinja only: no tokenizer state is touched, so this is safe next to a running generation
            text = tokenizer.apply_chat_template(
                messages, chat_template=template, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # jinja raises for message orders the template forbids
            raise BadRequestError(f"the messages do not fit the model's chat template: {exc}") from exc
        assert isinstance(text, str)
        return text

    def _producer(
        self, instance: _Instance, prompt: str, request: GenerationRequest, per_token: bool
    ) -> Callable[[Callable[[Chunk], None], threading.Event], None]:
        counters = self.counters

        def produce(emit: Callable[[Chunk], None], cancel: threading.Event) -> None:
            import torch
            from transformers import StoppingCriteriaList

            model, tokenizer = instance.model, instance.tokenizer
            inputs = tokenizer(prompt, add_special_tokens=request.prompt is not None, return_tensors="pt")
            prompt_ids = inputs["input_ids"][0].tolist()
            max_new = answer_limit(self.name, len(prompt_ids), instance.max_positions, request)
            on_text = (lambda text: emit(Chunk(text=text))) if per_token else None
            decoder = _Decoder(tokenizer, prompt_ids[-6:], list(request.stop), cancel, counters, on_text)
            sampling: dict[str, Any] = {"do_sample": False}
            if request.temperature > 0:
                sampling = {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p}
            if request.seed is not None:
                torch.manual_seed(request.seed)
            counters.add(generations=1)
            with torch.inference_mode():
                model.generate(  # type: ignore[operator]  # causal-LM classes add generate() to PreTrainedModel
                    **inputs.to(model.device),
                    max_new_tokens=max_new,
                    stopping_criteria=StoppingCriteriaList([decoder]),
                    **sampling,
                )
            if cancel.is_set():
                counters.add(cancelled=1)
                return
            decoder.finish()
            ended_by_eos = decoder.last_id in instance.eos_ids
            capped = decoder.steps >= max_new and not (decoder.stopped or ended_by_eos)
            finish: FinishReason = "length" if capped else "stop"
            usage = Usage(len(prompt_ids), decoder.steps - ended_by_eos)
            emit(Chunk(text="" if per_token else decoder.text, finish_reason=finish, usage=usage))

        return produce
