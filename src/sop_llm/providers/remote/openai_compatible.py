"""`openai`: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp's server); `lm_studio` is the same with
LM Studio's defaults.

One shared aiohttp session per provider: measured here, a pass-through on one shared httpx client tops out near
530 requests/s at concurrency 64 while one on aiohttp reaches ~5,800. Bodies are built and parsed with orjson.
HTTP and transport errors are translated into the service's error tree here, once; the API key is never put in
a message. No retries here: ModelRouter owns the one retry loop. While tracing is on, each call carries the W3C
`traceparent` of its provider span.

Options (providers.yaml `options:`): `headers` (extra request headers), `max_connections` (default 256),
`connect_timeout` (default 10 s), `json_format` (`json_schema`, OpenAI's, default; or `json_object_schema` for
servers such as llama.cpp's that take `{"type": "json_object", "schema": …}`), `stream_usage` (default true:
ask for `stream_options.include_usage`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from sop_llm.infra.errors import (
    AppError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderInitializationError,
    ProviderNotAvailableError,
    ProviderRateLimitError,
    ProviderTimeoutError,
)
from sop_llm.infra.trace import outgoing_traceparent
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.registry import register_provider
from sop_llm.providers.remote.retry_after import retry_after_seconds
from sop_llm.providers.types import Capability, Chunk, Completion, FinishReason, GenerationRequest, Health, Usage

if TYPE_CHECKING:
    import aiohttp


def _upstream_message(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:500]
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")


def status_error(name: str, status: int, headers: Any, body: bytes) -> AppError:
    """Translate an upstream HTTP error status into the service's error tree."""
    detail = f"'{name}' upstream answered {status}: {_upstream_message(body)}"
    if status == 429:
        return ProviderRateLimitError(detail, retry_after=retry_after_seconds(headers))
    if status in (401, 403):
        return ProviderAuthError(f"'{name}' upstream refused the credentials ({status}); check its api_key")
    if status in (400, 413, 422):
        return ProviderBadRequestError(detail)
    if status in (408, 502, 503, 504, 529):
        return ProviderNotAvailableError(detail, retry_after=retry_after_seconds(headers))
    return ProviderError(detail)


@register_provider("openai")
class OpenAICompatibleProvider(GenerationProvider):
    capabilities = frozenset(
        {
            Capability.TEXT_GENERATION,
            Capability.CHAT,
            Capability.STREAMING,
            Capability.FUNCTION_CALLING,
            Capability.JSON_SCHEMA,
        }
    )
    default_base_url = "https://api.openai.com/v1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session: aiohttp.ClientSession | None = None
        self.base_url = (self.provider_config.base_url or self.default_base_url).rstrip("/")
        options = self.provider_config.options
        self._json_format = options.get("json_format", "json_schema")
        self._stream_usage = bool(options.get("stream_usage", True))
        self._headers = {"Content-Type": "application/json", **options.get("headers", {})}
        if self.provider_config.api_key is not None and self.provider_config.api_key.get_secret_value():
            self._headers["Authorization"] = f"Bearer {self.provider_config.api_key.get_secret_value()}"

    async def load(self) -> None:
        import aiohttp

        options = self.provider_config.options
        connector = aiohttp.TCPConnector(limit=int(options.get("max_connections", 256)), ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=float(options.get("connect_timeout", 10)), sock_read=self.provider_config.timeout
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- wire format ----------------------------------------------------------------------------------
    def _payload(self, request: GenerationRequest, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_config.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.messages is not None:
            payload["messages"] = [{k: v for k, v in vars_of(m).items() if v is not None} for m in request.messages]
        else:
            payload["prompt"] = request.prompt
        if request.stop:
            payload["stop"] = request.stop
        if request.seed is not None:
            payload["seed"] = request.seed
        payload.update(_sampling_extras(request))
        if request.tools:
            payload["tools"] = request.tools
            if request.tool_choice is not None:
                payload["tool_choice"] = request.tool_choice
        if request.json_mode is not None:
            schema = request.json_mode.schema
            if schema is None:
                payload["response_format"] = {"type": "json_object"}
            elif self._json_format == "json_object_schema":
                payload["response_format"] = {"type": "json_object", "schema": schema}
            else:
                payload["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": schema},
                }
        if stream:
            payload["stream"] = True
            if self._stream_usage:
                payload["stream_options"] = {"include_usage": True}
        return payload

    async def _post(self, request: GenerationRequest, stream: bool) -> aiohttp.ClientResponse:
        import aiohttp

        if self._session is None:
            raise ProviderInitializationError(f"provider for '{self.name}' is not started")
        path = "/chat/completions" if request.messages is not None else "/completions"
        traceparent = outgoing_traceparent()
        headers = {"traceparent": traceparent} if traceparent is not None else None
        try:
            response = await self._session.post(
                self.base_url + path, data=orjson.dumps(self._payload(request, stream)), headers=headers
            )
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise ProviderNotAvailableError(f"cannot reach '{self.name}' at {self.base_url}: {exc}") from exc
        except TimeoutError as exc:
            raise ProviderTimeoutError(f"'{self.name}' did not answer in time") from exc
        if response.status >= 400:
            body = await response.read()
            response.release()
            raise status_error(self.name, response.status, response.headers, body)
        return response

    async def generate(self, request: GenerationRequest) -> Completion:
        response = await self._post(request, stream=False)
        try:
            body = orjson.loads(await response.read())
        except (TimeoutError, orjson.JSONDecodeError) as exc:
            raise ProviderError(f"'{self.name}' sent an unreadable answer: {exc}") from exc
        finally:
            response.release()
        return _completion(self.name, body)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        import aiohttp

        response = await self._post(request, stream=True)
        try:
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                event = orjson.loads(data)
                if "error" in event:
                    error = event["error"]
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise ProviderError(f"'{self.name}' failed mid-stream: {message}")
                chunk = _chunk(event)
                if chunk is not None:
                    yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, orjson.JSONDecodeError) as exc:
            raise ProviderNotAvailableError(f"'{self.name}' stream broke off: {exc}") from exc
        except TimeoutError as exc:
            raise ProviderTimeoutError(f"'{self.name}' stopped sending") from exc
        finally:
            response.close()  # an unfinished stream (client gone, error) closes the upstream connection

    async def health(self) -> Health:
        """The upstream's model list: cheap, unbilled, never a generation call."""
        import aiohttp

        if self._session is None:
            return Health(False, "not started")
        try:
            async with self._session.get(f"{self.base_url}/models") as response:
                await response.read()
                if response.status >= 400:
                    return Health(False, f"GET /models answered {response.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Health(False, f"unreachable: {type(exc).__name__}")
        return Health(True, "model list answered")


@register_provider("lm_studio")
class LMStudioProvider(OpenAICompatibleProvider):
    """LM Studio's local server: the openai provider with its default base URL."""

    default_base_url = "http://localhost:1234/v1"


def vars_of(message: Any) -> dict[str, Any]:
    """The wire fields of a chat message. `content` is always sent (empty beside tool calls): chat templates of
    OpenAI-compatible servers such as llama.cpp's fail on an assistant turn without it."""
    return {
        "role": message.role,
        "content": message.content if message.content is not None else "",
        "name": message.name,
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
    }


_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def _finish(value: str | None) -> FinishReason | None:
    """Upstream finish reasons, normalised (unknown ones, e.g. "eos", read as "stop")."""
    if value is None:
        return None
    return _FINISH.get(value, "stop")


def _usage(body: dict[str, Any]) -> Usage | None:
    usage = body.get("usage")
    if not usage:
        return None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), int(cached or 0))


def _completion(name: str, body: dict[str, Any]) -> Completion:
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise ProviderError(f"'{name}' answered without choices") from exc
    message = choice.get("message")
    text = (message.get("content") if message else choice.get("text")) or ""
    tool_calls = message.get("tool_calls") if message else None
    return Completion(
        text=text,
        finish_reason=_finish(choice.get("finish_reason")) or "stop",
        usage=_usage(body) or Usage(),
        tool_calls=tool_calls or None,
    )


def _chunk(event: dict[str, Any]) -> Chunk | None:
    choices = event.get("choices") or []
    usage = _usage(event)
    if not choices:
        return Chunk(usage=usage) if usage else None
    choice = choices[0]
    delta = choice.get("delta")
    text = (delta.get("content") if delta else choice.get("text")) or ""
    tool_calls = delta.get("tool_calls") if delta else None
    finish = _finish(choice.get("finish_reason"))
    if not text and not tool_calls and not finish and not usage:
        return None
    return Chunk(text=text, finish_reason=finish, usage=usage, tool_calls=tool_calls or None)


def _sampling_extras(request: GenerationRequest) -> dict[str, Any]:
    """The sampling settings a request changed from their neutral values, under the names OpenAI-compatible
    servers take (`top_k`, `min_p` and `repetition_penalty` are vLLM's and llama.cpp's server's, not OpenAI's: they
    are sent only when asked for)."""
    extras: dict[str, Any] = {}
    if request.presence_penalty:
        extras["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty:
        extras["frequency_penalty"] = request.frequency_penalty
    if request.logit_bias:
        extras["logit_bias"] = {str(token): bias for token, bias in request.logit_bias.items()}
    if request.top_k is not None:
        extras["top_k"] = request.top_k
    if request.min_p is not None:
        extras["min_p"] = request.min_p
    if request.repetition_penalty != 1.0:
        extras["repetition_penalty"] = request.repetition_penalty
    return extras
