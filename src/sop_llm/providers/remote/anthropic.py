"""`anthropic`: Claude through the official `anthropic` SDK's Messages API.

The SDK runs on its aiohttp transport with its own retries off: ModelRouter owns the one retry loop. OpenAI-style
messages, tools and tool calls are mapped to Anthropic's shapes and back here; JSON output comes from a forced
tool whose input is the answer. SDK exceptions are translated into the service's error tree here, once; the API
key is never put in a message. While tracing is on, each call carries the W3C `traceparent` of its provider span.

`base_url` is the API root without `/v1` (default `https://api.anthropic.com`). Options (providers.yaml
`options:`): `headers` (extra request headers).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sop_llm.infra.errors import (
    AppError,
    BadRequestError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderInitializationError,
    ProviderNotAvailableError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    UnsupportedFeatureError,
)
from sop_llm.infra.trace import outgoing_traceparent
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.registry import register_provider
from sop_llm.providers.remote.retry_after import retry_after_seconds
from sop_llm.providers.types import (
    Capability,
    ChatMessage,
    Chunk,
    Completion,
    FinishReason,
    GenerationRequest,
    Health,
    Usage,
)

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import Message, RawMessageStreamEvent

DEFAULT_BASE_URL = "https://api.anthropic.com"
JSON_TOOL = "json_response"  # the forced tool whose input is the JSON answer
_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# -- requests: OpenAI shapes → Anthropic ------------------------------------------------------------------
def _tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        decoded = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"tool call '{call.get('id')}': arguments are not JSON: {exc}", param="messages") from exc
    if not isinstance(decoded, dict):
        raise BadRequestError(f"tool call '{call.get('id')}': arguments must be a JSON object", param="messages")
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": decoded}


def _content_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        if not message.tool_call_id:
            raise BadRequestError("a message with role 'tool' needs a tool_call_id", param="messages")
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content or ""}]
    blocks = [{"type": "text", "text": message.content}] if message.content else []
    if message.role == "assistant":
        blocks += [_tool_use_block(call) for call in message.tool_calls or []]
    return blocks


def to_anthropic_messages(messages: list[ChatMessage]) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI-style messages → Anthropic's `system` and alternating user/assistant turns.

    System messages are joined into `system`; tool results become `tool_result` blocks of a user turn;
    consecutive turns of one role are merged, as Anthropic requires.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            if message.content:
                system.append(message.content)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _content_blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(system) or None, turns


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
        raise BadRequestError("tools: each tool must be {type: function, function: {name, ...}}", param="tools")
    spec = {"name": function["name"], "input_schema": function.get("parameters") or {"type": "object"}}
    if function.get("description"):
        spec["description"] = function["description"]
    return spec


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "required", "none"):
        return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and function.get("name"):
        return {"type": "tool", "name": function["name"]}
    raise BadRequestError(f"tool_choice: unsupported value {choice!r}", param="tool_choice")


def _sampling(request: GenerationRequest) -> dict[str, float]:
    # Anthropic takes temperature in [0, 1], and recent models refuse temperature and top_p together: send one.
    chosen: dict[str, float] = {"temperature": min(request.temperature, 1.0)}
    if request.top_p < 1 and request.temperature == 1:
        chosen = {"top_p": request.top_p}
    if request.top_k is not None:
        chosen["top_k"] = request.top_k
    return chosen


def message_params(model: str, request: GenerationRequest) -> dict[str, Any]:
    """The keyword arguments of `messages.create` for a request."""
    if request.messages is None:
        raise UnsupportedFeatureError("Anthropic models take chat messages, not raw prompts", param="prompt")
    system, messages = to_anthropic_messages(request.messages)
    params: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens, "messages": messages}
    if system:
        params["system"] = system
    if request.stop:
        params["stop_sequences"] = request.stop
    tools = [_tool(t) for t in request.tools or []]
    choice = _tool_choice(request.tool_choice) if tools else None
    if request.json_mode is not None:
        schema = request.json_mode.schema or {"type": "object"}
        tools.append({"name": JSON_TOOL, "description": "Answer with this tool's input.", "input_schema": schema})
        choice = {"type": "tool", "name": JSON_TOOL}
    if tools:
        params["tools"] = tools
    if choice:
        params["tool_choice"] = choice
    params["extra_body"] = _sampling(request)  # this SDK version has no typed sampling parameters
    return params


# -- answers: Anthropic → OpenAI shapes ----------------------------------------------------------------
def _finish(stop_reason: str | None, forced_json: bool) -> FinishReason:
    if stop_reason == "tool_use" and forced_json:
        return "stop"
    return _FINISH.get(stop_reason or "end_turn", "stop")


def _completion(message: Message, json_mode: bool) -> Completion:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    json_text: str | None = None
    for block in message.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use" and json_mode and block.name == JSON_TOOL:
            json_text = json.dumps(block.input)
        elif block.type == "tool_use":
            function = {"name": block.name, "arguments": json.dumps(block.input)}
            calls.append({"id": block.id, "type": "function", "function": function})
    usage = Usage(message.usage.input_tokens, message.usage.output_tokens)
    text = json_text if json_text is not None else "".join(texts)
    return Completion(text, _finish(message.stop_reason, json_text is not None), usage, calls or None)


class _StreamMapper:
    """Turns Anthropic's raw stream events into our chunks, one event at a time."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.calls: dict[int, int] = {}  # content block index → OpenAI tool call index
        self.json_block: int | None = None
        self.sent_input: set[int] = set()  # blocks whose input has had a non-empty fragment
        self.finished = False

    def _input(self, index: int, fragment: str) -> Chunk | None:
        if not fragment or (index != self.json_block and index not in self.calls):
            return None
        self.sent_input.add(index)
        if index == self.json_block:
            return Chunk(text=fragment)
        return Chunk(tool_calls=[{"index": self.calls[index], "function": {"arguments": fragment}}])

    def feed(self, event: RawMessageStreamEvent) -> Chunk | None:
        if event.type == "message_start":
            self.usage = Usage(event.message.usage.input_tokens, event.message.usage.output_tokens)
        elif event.type == "content_block_start" and event.content_block.type == "tool_use":
            block = event.content_block
            if self.json_mode and block.name == JSON_TOOL:
                self.json_block = event.index
                return None
            self.calls[event.index] = position = len(self.calls)
            function = {"name": block.name, "arguments": ""}
            return Chunk(tool_calls=[{"index": position, "id": block.id, "type": "function", "function": function}])
        elif event.type == "content_block_delta":
            if event.delta.type == "text_delta":  # a forced tool comes without text; a refusal may not
                return Chunk(text=event.delta.text) if event.delta.text else None
            if event.delta.type == "input_json_delta":
                return self._input(event.index, event.delta.partial_json)
        elif event.type == "content_block_stop" and event.index not in self.sent_input:
            return self._input(event.index, "{}")  # a tool called without arguments still gets a JSON object
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason
            self.usage.completion_tokens = event.usage.output_tokens
            if event.usage.input_tokens is not None:
                self.usage.prompt_tokens = event.usage.input_tokens
        elif event.type == "message_stop":
            self.finished = True
            return Chunk(finish_reason=_finish(self.stop_reason, self.json_block is not None), usage=self.usage)
        return None


# -- errors ---------------------------------------------------------------------------------------------
def translate_error(name: str, exc: anthropic.APIError) -> AppError:
    """Translate an SDK exception into the service's error tree."""
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTimeoutError(f"'{name}': Anthropic did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderNotAvailableError(f"cannot reach Anthropic for '{name}': {exc.message}")
    if not isinstance(exc, anthropic.APIStatusError):
        return ProviderError(f"'{name}': Anthropic sent an unreadable answer: {exc.message[:300]}")
    status, kind, message = exc.status_code, exc.type or "error", (exc.api_message or "")[:500]
    if status < 400:  # an `error` event inside a streamed answer
        detail = f"'{name}': Anthropic failed mid-stream with {kind}: {message}"
        if kind in ("overloaded_error", "api_error"):
            return ProviderNotAvailableError(detail)
        return ProviderRateLimitError(detail) if kind == "rate_limit_error" else ProviderError(detail)
    detail = f"'{name}': Anthropic answered {status} {kind}: {message}"
    if status in (401, 403):
        return ProviderAuthError(f"'{name}': Anthropic refused the API key ({status} {kind}); check ANTHROPIC_API_KEY")
    if status == 429:
        return ProviderRateLimitError(detail, retry_after=retry_after_seconds(exc.response.headers))
    if status in (400, 404, 413, 422):
        return ProviderBadRequestError(detail)
    if status == 408 or status >= 500:  # 529 is Anthropic's "overloaded"
        return ProviderNotAvailableError(detail, retry_after=retry_after_seconds(exc.response.headers))
    return ProviderError(detail)


def _trace_headers() -> dict[str, str] | None:
    traceparent = outgoing_traceparent()
    return {"traceparent": traceparent} if traceparent is not None else None


@register_provider("anthropic")
class AnthropicProvider(GenerationProvider):
    capabilities = frozenset(
        {Capability.CHAT, Capability.STREAMING, Capability.FUNCTION_CALLING, Capability.JSON_SCHEMA}
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: anthropic.AsyncAnthropic | None = None
        self._not_started = "not started"  # why there is no client, for health() and calls
        base_url = (self.provider_config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = base_url.removesuffix("/v1")  # the SDK adds /v1 itself

    async def load(self) -> None:
        import anthropic

        key = self.provider_config.api_key.get_secret_value().strip() if self.provider_config.api_key else ""
        if not key:
            self._not_started = (
                f"provider '{self.model_config.provider}' has no API key; set ANTHROPIC_API_KEY and write "
                "`api_key: ${ANTHROPIC_API_KEY}` under it in providers.yaml"
            )
            raise ProviderInitializationError(f"'{self.name}': {self._not_started}")
        self._client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=self.base_url,
            max_retries=0,
            timeout=self.provider_config.timeout,
            default_headers=self.provider_config.options.get("headers"),
            http_client=anthropic.DefaultAioHttpClient(),
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client, self._not_started = None, "closed"

    def _started(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            raise ProviderInitializationError(f"'{self.name}': {self._not_started}")
        return self._client

    async def generate(self, request: GenerationRequest) -> Completion:
        import anthropic

        client = self._started()
        params = message_params(self.model_config.model, request)
        try:
            message = await client.messages.create(**params, stream=False, extra_headers=_trace_headers())
        except anthropic.APIError as exc:
            raise translate_error(self.name, exc) from exc
        return _completion(message, request.json_mode is not None)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        import anthropic
        import httpx2

        client = self._started()
        params = message_params(self.model_config.model, request)
        mapper = _StreamMapper(request.json_mode is not None)
        try:
            events = await client.messages.create(**params, stream=True, extra_headers=_trace_headers())
        except anthropic.APIError as exc:
            raise translate_error(self.name, exc) from exc
        try:
            async for event in events:
                chunk = mapper.feed(event)
                if chunk is not None:
                    yield chunk
        except anthropic.APIError as exc:
            raise translate_error(self.name, exc) from exc
        except httpx2.TimeoutException as exc:
            raise ProviderTimeoutError(f"'{self.name}': Anthropic stopped sending") from exc
        except httpx2.TransportError as exc:
            raise ProviderNotAvailableError(f"'{self.name}': the Anthropic stream broke off: {exc}") from exc
        finally:
            await events.close()  # an unfinished stream (client gone, error) closes the upstream connection
        if not mapper.finished:
            raise ProviderNotAvailableError(f"'{self.name}': the Anthropic stream ended before message_stop")

    async def health(self) -> Health:
        """The model list: cheap, unbilled, never a messages call."""
        import anthropic

        if self._client is None:
            return Health(False, self._not_started)
        try:
            await self._client.models.list(limit=1)
        except anthropic.APIStatusError as exc:
            return Health(False, f"GET /v1/models answered {exc.status_code}")
        except anthropic.APIError as exc:
            return Health(False, f"unreachable: {type(exc).__name__}")
        return Health(True, "model list answered")
