"""The span of one provider call, after the OpenTelemetry GenAI semantic conventions; opened by Deployments around
every generation, remote or local, under the request's SERVER span (none outside a traced request).

Named `chat <model>` or `text_completion <model>`, CLIENT for a remote provider, INTERNAL for a model in this
process. Attributes: `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model` and
`gen_ai.response.model` (the provider's model id; providers here do not report another one), the request's
`gen_ai.request.max_tokens` / `temperature` / `top_p`, `gen_ai.usage.input_tokens` / `output_tokens`,
`gen_ai.response.finish_reasons`, `server.address` / `server.port` for a remote one, and `sop_llm.deployment`.
A stream also gets `gen_ai.response.time_to_first_token` (seconds from the call to its first chunk) and an event
`gen_ai.first_token` at that moment. With OTEL_CAPTURE_CONTENT, `gen_ai.input.messages` and `gen_ai.output.messages`
hold the prompt and the answer as JSON, redacted as the request log redacts bodies.

While the span is open, a remote provider passes it upstream as `traceparent` (infra/trace.py).
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple
from urllib.parse import urlsplit

import orjson

from sop_llm.infra.telemetry.active import AttributeValue, RequestTrace, Span, SpanShape, request_trace
from sop_llm.infra.trace import reset_outgoing_traceparent, set_outgoing_traceparent
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.types import Chunk, Completion, GenerationRequest, Usage

# Provider types as the conventions name them (gen_ai.provider.name); others go by their type.
_PROVIDER_NAMES = {"llamacpp": "llama.cpp"}


class ProviderSpan:
    """Opened before the call; `chunk` for each streamed chunk, then `answered` / `streamed` or `failed`, then `end`."""

    __slots__ = (
        "_answer",
        "_deployment",
        "_finish_reason",
        "_token",
        "_trace",
        "_usage",
        "first_token_s",
        "span",
        "started",
    )

    def __init__(self, trace: RequestTrace, provider: GenerationProvider, request: GenerationRequest) -> None:
        config = provider.provider_config
        remote = not provider.local
        deployment = self._deployment = _deployment(
            config.type,
            provider.model_config.model,
            provider.name,
            remote,
            config.base_url if remote else None,
            "chat" if request.messages is not None else "text_completion",
            request.max_tokens,
            request.temperature,
            request.top_p,
        )
        attributes: dict[str, AttributeValue] | None = None
        if request.seed is not None or request.stop:
            attributes = {}
            if request.seed is not None:
                attributes["gen_ai.request.seed"] = request.seed
            if request.stop:
                attributes["gen_ai.request.stop_sequences"] = request.stop
        self.span: Span = trace.child(deployment.shape, deployment.remote, attributes)
        self.started = time.perf_counter()
        self.first_token_s: float | None = None
        self._trace = trace
        self._answer: list[str] | None = None
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        if trace.capture_content and self.span.recording:
            self.span.set({"gen_ai.input.messages": _input_messages(trace, request)})
            self._answer = []
        self._token = set_outgoing_traceparent(self.span.traceparent) if deployment.remote else None

    def chunk(self, chunk: Chunk) -> None:
        """Note a streamed chunk: the first one's time; the finish reason and usage on the last ones; the text when
        content is captured."""
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started
            self.span.set({"gen_ai.response.time_to_first_token": self.first_token_s})
            self.span.event("gen_ai.first_token")
        if chunk.finish_reason is not None:
            self._finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        if self._answer is not None and chunk.text:
            self._answer.append(chunk.text)

    def answered(self, completion: Completion) -> None:
        if self._answer is not None:
            self._answer.append(completion.text)
        self._finished(completion.finish_reason, completion.usage)

    def streamed(self) -> None:
        """The stream ended well."""
        self._finished(self._finish_reason, self._usage)

    def _finished(self, finish_reason: str | None, usage: Usage | None) -> None:
        self.span.reshape(_answered(self._deployment, finish_reason))
        if usage is not None:
            attributes: dict[str, AttributeValue] = {
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
            }
            if self._answer is not None:
                attributes["gen_ai.output.messages"] = _output_messages(
                    self._trace, "".join(self._answer), finish_reason
                )
            self.span.set(attributes)
        elif self._answer is not None:
            self.span.set(
                {"gen_ai.output.messages": _output_messages(self._trace, "".join(self._answer), finish_reason)}
            )

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            self.span.fail(type(exc).__qualname__, str(exc)[:500])
        elif isinstance(exc, GeneratorExit) and self._finish_reason is not None:
            self.streamed()  # its reader stopped after the last chunk it needed
        else:  # cancelled, or a stream its reader closed early
            self.span.fail("cancelled")

    def end(self) -> None:
        if self._token is not None:
            reset_outgoing_traceparent(self._token)
            self._token = None
        self.span.end()


def provider_span(provider: GenerationProvider, request: GenerationRequest) -> ProviderSpan | None:
    """The span of a call about to start, or None (nothing done) outside a traced request."""
    trace = request_trace.get()
    return ProviderSpan(trace, provider, request) if trace is not None else None


class _Deployment(NamedTuple):
    """What the spans of calls to one deployment with the same settings have alike."""

    model: str
    remote: bool
    shape: SpanShape


@functools.lru_cache(maxsize=1024)
def _deployment(
    provider_type: str,
    model: str,
    deployment: str,
    remote: bool,
    base_url: str | None,
    operation: str,
    max_tokens: int,
    temperature: float,
    top_p: float,
) -> _Deployment:
    """Kept, so that the span writer encodes each one's shape once. Keyed by values, not by the provider, which may
    hold a loaded model."""
    pairs: list[tuple[str, AttributeValue]] = [
        ("gen_ai.operation.name", operation),
        ("gen_ai.provider.name", _PROVIDER_NAMES.get(provider_type, provider_type)),
        ("gen_ai.request.model", model),
        ("gen_ai.request.max_tokens", max_tokens),
        ("gen_ai.request.temperature", float(temperature)),
        ("gen_ai.request.top_p", float(top_p)),
        ("sop_llm.deployment", deployment),
    ]
    url = urlsplit(base_url) if base_url else None
    if url is not None and url.hostname:
        port = url.port or (443 if url.scheme == "https" else 80)
        pairs += [("server.address", url.hostname), ("server.port", port)]
    return _Deployment(model, remote, SpanShape(f"{operation} {model}", pairs))


@functools.lru_cache(maxsize=1024)
def _answered(deployment: _Deployment, finish_reason: str | None) -> SpanShape:
    """The deployment's shape with the answer's model and finish reason."""
    pairs: list[tuple[str, AttributeValue]] = [("gen_ai.response.model", deployment.model)]
    if finish_reason is not None:
        pairs.append(("gen_ai.response.finish_reasons", (finish_reason,)))
    shape = deployment.shape
    return SpanShape(shape.name, (*shape.pairs, *pairs))


def _input_messages(trace: RequestTrace, request: GenerationRequest) -> str:
    if request.messages is None:
        messages = [{"role": "user", "parts": [_text(trace, request.prompt or "")]}]
    else:
        messages = [{"role": m.role, "parts": [_text(trace, m.content or "")]} for m in request.messages]
    return orjson.dumps(messages).decode()


def _output_messages(trace: RequestTrace, text: str, finish_reason: str | None) -> str:
    message = {"role": "assistant", "parts": [_text(trace, text)], "finish_reason": finish_reason or "stop"}
    return orjson.dumps([message]).decode()


def _text(trace: RequestTrace, text: str) -> dict[str, str]:
    return {"type": "text", "content": trace.redact(text)}
