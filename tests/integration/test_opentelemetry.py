"""OpenTelemetry traces, end to end: a live server exports over OTLP/HTTP to a receiver on loopback that decodes the
protobuf requests. A SERVER span per request continues the caller's `traceparent`; under it, a GenAI span per
provider call (the embedded SmolLM2 on llama.cpp, and a fake OpenAI-compatible upstream that records the headers it
is sent). Without an endpoint, the service imports nothing of OpenTelemetry (beyond what FastAPI and the Redis client
import themselves; never the tracing SDK, the exporter or the protobuf messages) and sends nothing."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml
from aiohttp import web
from loguru import logger
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.live_server import LiveServer, make_settings, smollm2_config

pytestmark = [pytest.mark.integration, pytest.mark.api]

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP trace receiver: keeps every span it is sent, with the service that sent it."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.headers: list[dict[str, str]] = []  # of each export, names lowercased
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.headers.append({name.lower(): value for name, value in self.headers.items()})
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.receive(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="otlp-receiver")

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def receive(self, path: str, body: bytes) -> None:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            for resource in request.resource_spans:
                service = _attributes(resource.resource.attributes)["service.name"]
                for scope in resource.scope_spans:
                    self.spans.extend((service, span) for span in scope.spans)

    def trace(self, trace_id: str, count: int, timeout: float = 20.0) -> list[Span]:
        """The spans of a trace, once `count` of them have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = [span for _, span in self.spans if span.trace_id.hex() == trace_id]
            if len(spans) >= count or time.monotonic() > deadline:
                assert len(spans) == count, [s.name for s in spans]
                return spans
            time.sleep(0.02)


class RecordingUpstream(FakeOpenAI):
    """The fake OpenAI-compatible upstream, keeping the headers of every generation request."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict[str, str]] = []

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        return await super()._answer(request)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind)


def _attributes(attributes: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in attributes}


def _server_and_provider(spans: list[Span]) -> tuple[Span, Span]:
    (server,) = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    (provider,) = [s for s in spans if s.kind != Span.SPAN_KIND_SERVER]
    assert provider.parent_span_id == server.span_id
    return server, provider


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    fake = RecordingUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(api_key="test-key", model_ids=("claude-test",)).start()
    yield fake
    fake.stop()


def _config(folder: Path, upstream: RecordingUpstream, local: bool, claude: FakeAnthropic | None = None) -> Path:
    """The fake upstream as `remote` (and `broken`, which answers 500), beside the embedded SmolLM2 (`smollm2-135m`)
    and MiniLM (`all-minilm-l6-v2`) when `local`."""
    smollm2_config(folder, context_length=512)
    providers = yaml.safe_load((folder / "providers.yaml").read_text())
    providers["providers"]["fake"] = {"type": "openai", "base_url": upstream.url, "timeout": 10}
    if claude is not None:
        providers["providers"]["claude-api"] = {
            "type": "anthropic",
            "base_url": claude.url,
            "api_key": "test-key",
            "timeout": 10,
        }
    (folder / "providers.yaml").write_text(yaml.safe_dump(providers))
    models = yaml.safe_load((folder / "models.yaml").read_text())
    if local:  # and the shipped embedding model (ONNX, int8)
        (folder / "embeddings.yaml").write_text(Path("config/embeddings.yaml").read_text())
    else:
        models["models"].clear()
    models["models"]["remote"] = {"provider": "fake", "model": "ok"}
    models["models"]["broken"] = {"provider": "fake", "model": "fail-500"}
    if claude is not None:
        models["models"]["claude"] = {"provider": "claude-api", "model": "claude-test"}
    (folder / "models.yaml").write_text(yaml.safe_dump(models))
    return folder


@pytest.fixture(scope="module")
def traced_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within 50 ms
        yield


@pytest.fixture(scope="module")
def service(
    traced_env: None,
    receiver: Receiver,
    upstream: RecordingUpstream,
    claude: FakeAnthropic,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    folder = _config(tmp_path_factory.mktemp("otel"), upstream, local=True, claude=claude)
    settings = make_settings(
        CONFIG_DIR=str(folder),
        LLM_DEFAULT_MODEL="smollm2-135m",
        LLM_RETRIES=0,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
    )
    live = LiveServer(settings).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def capturing(
    traced_env: None, receiver: Receiver, upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    folder = _config(tmp_path_factory.mktemp("otel-content"), upstream, local=False)
    settings = make_settings(
        CONFIG_DIR=str(folder),
        LLM_DEFAULT_MODEL="remote",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.url}/v1/traces",
        OTEL_CAPTURE_CONTENT=True,
        OTEL_SERVICE_NAME="sop-llm-content",
    )
    live = LiveServer(settings).start()
    yield live
    live.stop()


def _chat(url: str, model: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4,
        "temperature": 0,
        **body,
    }
    response = httpx.post(f"{url}/v1/chat/completions", json=payload, headers=headers or {}, timeout=60)
    assert response.status_code == 200, response.text
    return response


def test_server_span_continues_the_callers_trace_and_a_genai_span_hangs_under_it(
    service: LiveServer, receiver: Receiver
) -> None:
    response = _chat(service.url, "smollm2-135m", {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert response.headers["x-request-id"] == CALLER_TRACE
    server, provider = _server_and_provider(receiver.trace(CALLER_TRACE, 2))

    assert server.parent_span_id.hex() == CALLER_SPAN
    assert server.name == "POST /v1/chat/completions"
    assert _attributes(server.attributes) == {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "url.scheme": "http",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
    }
    assert server.status.code != server.status.STATUS_CODE_ERROR
    assert response.headers["traceparent"] == f"00-{CALLER_TRACE}-{server.span_id.hex()}-01"

    usage = response.json()["usage"]
    attributes = _attributes(provider.attributes)
    assert provider.name == "chat embedded:smollm2-135m-instruct"
    assert provider.kind == Span.SPAN_KIND_INTERNAL  # a model in this process
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "llama.cpp"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == "embedded:smollm2-135m-instruct"
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == [response.json()["choices"][0]["finish_reason"]]
    assert attributes["gen_ai.request.max_tokens"] == 4
    assert attributes["gen_ai.request.temperature"] == 0
    assert "gen_ai.input.messages" not in attributes  # content only with OTEL_CAPTURE_CONTENT
    assert server.start_time_unix_nano <= provider.start_time_unix_nano
    assert provider.end_time_unix_nano <= server.end_time_unix_nano


def test_without_a_traceparent_the_request_id_is_the_trace_id(service: LiveServer, receiver: Receiver) -> None:
    response = _chat(service.url, "remote")
    trace_id = response.headers["x-request-id"]
    server, _ = _server_and_provider(receiver.trace(trace_id, 2))
    assert server.parent_span_id == b""
    # Sampled, and (W3C trace context level 2) a random trace id: made here, not by the caller.
    assert response.headers["traceparent"] == f"00-{trace_id}-{server.span_id.hex()}-03"

    # A caller's own X-Request-ID names the request; the trace then has an id of its own and files it as well.
    response = _chat(service.url, "remote", {"X-Request-ID": "job-42"})
    assert response.headers["x-request-id"] == "job-42"
    own_trace = response.headers["traceparent"].split("-")[1]
    server, _ = _server_and_provider(receiver.trace(own_trace, 2))
    assert _attributes(server.attributes)["http.request.header.x-request-id"] == ["job-42"]


def test_a_route_of_an_included_router_is_named_whole(service: LiveServer, receiver: Receiver) -> None:
    trace = "e" + CALLER_TRACE[1:]
    response = httpx.get(
        f"{service.url}/api/v1/tasks/no-such-task", headers={"traceparent": f"00-{trace}-{CALLER_SPAN}-01"}
    )
    assert response.status_code == 404
    (server,) = receiver.trace(trace, 1)
    assert server.name == "GET /api/v1/tasks/{task_id}"
    assert _attributes(server.attributes)["http.route"] == "/api/v1/tasks/{task_id}"
    assert _attributes(server.attributes)["http.response.status_code"] == 404
    assert server.status.code != server.status.STATUS_CODE_ERROR  # a 4xx is the caller's, not the server's


def test_a_stream_records_its_first_token_time(service: LiveServer, receiver: Receiver) -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    with httpx.stream(
        "POST",
        f"{service.url}/v1/chat/completions",
        json={
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "Count to three."}],
            "max_tokens": 6,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"},
        timeout=60,
    ) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    usage = events[-1]["usage"]
    _, provider = _server_and_provider(receiver.trace(trace, 2))
    attributes = _attributes(provider.attributes)
    first_token = attributes["gen_ai.response.time_to_first_token"]
    assert 0 < first_token <= (provider.end_time_unix_nano - provider.start_time_unix_nano) / 1e9
    (event,) = [e for e in provider.events if e.name == "gen_ai.first_token"]
    assert provider.start_time_unix_nano < event.time_unix_nano <= provider.end_time_unix_nano
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attributes["gen_ai.response.finish_reasons"] in (["stop"], ["length"])


@pytest.mark.parametrize("stream", [False, True])
def test_a_remote_provider_is_sent_the_trace(
    service: LiveServer, receiver: Receiver, upstream: RecordingUpstream, stream: bool
) -> None:
    trace = f"{'5' if stream else '6'}{CALLER_TRACE[1:]}"
    before = len(upstream.headers)
    _chat(service.url, "remote", {"traceparent": f"00-{trace}-{CALLER_SPAN}-01"}, stream=stream)
    _, provider = _server_and_provider(receiver.trace(trace, 2))
    assert provider.kind == Span.SPAN_KIND_CLIENT
    attributes = _attributes(provider.attributes)
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "ok"
    assert attributes["server.address"] == "127.0.0.1"
    (sent,) = upstream.headers[before:]
    assert sent["traceparent"] == f"00-{trace}-{provider.span_id.hex()}-01"


def test_an_embedding_call_has_its_span(service: LiveServer, receiver: Receiver) -> None:
    trace = "b" + CALLER_TRACE[1:]
    response = httpx.post(
        f"{service.url}/v1/embeddings",
        json={"model": "all-minilm-l6-v2", "input": ["a traced sentence", "and another one"]},
        headers={"traceparent": f"00-{trace}-{CALLER_SPAN}-01"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    server, provider = _server_and_provider(receiver.trace(trace, 2))
    assert server.name == "POST /v1/embeddings"
    attributes = _attributes(provider.attributes)
    assert provider.name == "embeddings embedded:all-minilm-l6-v2"
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert attributes["gen_ai.usage.input_tokens"] == response.json()["usage"]["prompt_tokens"] > 0
    assert attributes["gen_ai.embeddings.dimension.count"] == len(response.json()["data"][0]["embedding"])
    assert attributes["sop_llm.inputs"] == 2


def test_a_failed_call_marks_both_spans(service: LiveServer, receiver: Receiver) -> None:
    trace = "8" + CALLER_TRACE[1:]
    payload = {"model": "broken", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"traceparent": f"00-{trace}-{CALLER_SPAN}-01"}
    response = httpx.post(f"{service.url}/v1/chat/completions", json=payload, headers=headers, timeout=30)
    assert response.status_code >= 500
    server, provider = _server_and_provider(receiver.trace(trace, 2))
    assert server.status.code == server.status.STATUS_CODE_ERROR
    assert _attributes(server.attributes)["error.type"] == str(response.status_code)
    assert provider.status.code == provider.status.STATUS_CODE_ERROR
    assert "scripted 500" in provider.status.message
    assert _attributes(provider.attributes)["error.type"] == "ProviderError"


def test_an_unsampled_trace_is_passed_on_but_not_recorded(
    service: LiveServer, receiver: Receiver, upstream: RecordingUpstream
) -> None:
    trace = "9" + CALLER_TRACE[1:]
    before = len(upstream.headers)
    response = _chat(service.url, "remote", {"traceparent": f"00-{trace}-{CALLER_SPAN}-00"})
    assert response.headers["traceparent"].startswith(f"00-{trace}-")
    assert response.headers["traceparent"].endswith("-00")
    (sent,) = upstream.headers[before:]
    assert sent["traceparent"].startswith(f"00-{trace}-") and sent["traceparent"].endswith("-00")
    _chat(service.url, "remote", {"traceparent": f"00-{'a' + trace[1:]}-{CALLER_SPAN}-01"})
    receiver.trace("a" + trace[1:], 2)  # a later, sampled trace has arrived: the unsampled one would have too
    assert receiver.trace(trace, 0, timeout=0) == []


def test_spans_are_written_as_otlp_protobuf() -> None:
    """The span writer against the official messages, with every kind of value it may be given."""
    from sop_llm.infra.telemetry import otlp
    from sop_llm.infra.telemetry.active import SpanShape

    class Written:
        shape = SpanShape("chat m", (("op", "chat"), ("max", 16), ("temperature", 0.5), ("reasons", ("stop",))))
        kind = 3
        trace_id = bytes.fromhex(CALLER_TRACE)
        span_id = bytes.fromhex("1122334455667788")
        parent_id = b""
        flags = 0x301
        start_ns = 1_700_000_000_000_000_000
        end_ns = start_ns + 1_500_000
        attributes: ClassVar[dict[str, Any]] = {
            "s": "é ✓",
            "t": True,
            "f": False,
            "i": 3,
            "n": -7,
            "big": 2**62,
            "d": 0.25,
            "strings": ["a", "b"],
            "ints": (1, 2),
            "long": "x" * 300,
        }
        events: ClassVar[list[Any]] = [("gen_ai.first_token", start_ns + 10, None), ("e", start_ns + 20, {"k": "v"})]
        error = True
        message = "went wrong"

    class Child(Written):
        parent_id = bytes.fromhex("99aabbccddeeff00")

    body = otlp.encode_request(
        {"service.name": "svc"},
        otlp.encode_scope("scope", "1.0"),
        [otlp.encode_span(Written()), otlp.encode_span(Child())],
    )
    request = ExportTraceServiceRequest.FromString(body)
    (resource,) = request.resource_spans
    assert _attributes(resource.resource.attributes) == {"service.name": "svc"}
    (scope,) = resource.scope_spans
    assert (scope.scope.name, scope.scope.version) == ("scope", "1.0")
    root, span = scope.spans
    assert root.parent_span_id == b"" and span.parent_span_id.hex() == "99aabbccddeeff00"
    orphan = Span()
    orphan.CopyFrom(span)
    orphan.ClearField("parent_span_id")
    assert orphan == root  # the same span otherwise
    assert span.trace_id.hex() == CALLER_TRACE and span.span_id.hex() == "1122334455667788"
    assert span.name == "chat m" and span.kind == Span.SPAN_KIND_CLIENT
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (Written.start_ns, Written.end_ns)
    assert span.flags == 0x301
    shared = {"op": "chat", "max": 16, "temperature": 0.5, "reasons": ["stop"]}
    assert _attributes(span.attributes) == {**shared, **Written.attributes, "ints": [1, 2]}
    assert [(e.name, e.time_unix_nano, _attributes(e.attributes)) for e in span.events] == [
        ("gen_ai.first_token", Written.start_ns + 10, {}),
        ("e", Written.start_ns + 20, {"k": "v"}),
    ]
    assert (span.status.code, span.status.message) == (span.status.STATUS_CODE_ERROR, "went wrong")


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_is_sent_the_trace(
    service: LiveServer, receiver: Receiver, claude: FakeAnthropic, stream: bool
) -> None:
    trace = f"{'c' if stream else 'd'}{CALLER_TRACE[1:]}"
    _chat(service.url, "claude", {"traceparent": f"00-{trace}-{CALLER_SPAN}-01"}, stream=stream)
    _, provider = _server_and_provider(receiver.trace(trace, 2))
    attributes = _attributes(provider.attributes)
    assert (provider.kind, attributes["gen_ai.provider.name"]) == (Span.SPAN_KIND_CLIENT, "anthropic")
    assert attributes["gen_ai.request.model"] == "claude-test"
    sent = claude.recorded("/v1/messages")[-1]
    assert sent.headers["traceparent"] == f"00-{trace}-{provider.span_id.hex()}-01"


def test_captured_content_is_redacted(capturing: LiveServer, receiver: Receiver) -> None:
    trace = "7" + CALLER_TRACE[1:]
    prompt = "Write to jane.doe@example.com about the invoice."
    _chat(
        capturing.url,
        "remote",
        {"traceparent": f"00-{trace}-{CALLER_SPAN}-01"},
        messages=[{"role": "user", "content": prompt}],
    )
    spans = receiver.trace(trace, 2)
    _, provider = _server_and_provider(spans)
    messages = json.loads(_attributes(provider.attributes)["gen_ai.input.messages"])
    assert messages == [
        {"role": "user", "parts": [{"type": "text", "content": "Write to [REDACTED] about the invoice."}]}
    ]
    answer = json.loads(_attributes(provider.attributes)["gen_ai.output.messages"])
    assert answer[0]["parts"][0]["content"] == "fake answer"
    assert all("jane.doe" not in str(span) for span in spans)
    assert {service for service, span in receiver.spans if span.trace_id.hex() == trace} == {"sop-llm-content"}


NOTHING_IMPORTED = """
import json, sys
# Libraries that import parts of OpenTelemetry themselves, whatever the app does: FastAPI 0.165 its API, the Redis
# client (8.x) the metrics SDK when it is installed.
import fastapi, redis.asyncio
framework = {m for m in sys.modules if m.startswith("opentelemetry")}
import httpx
from tests.live_server import LiveServer, make_settings
live = LiveServer(make_settings(CONFIG_DIR=sys.argv[1], LLM_DEFAULT_MODEL="remote")).start()
reply = httpx.post(live.url + "/v1/chat/completions", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"traceparent": "00-%s-%s-01" % ("1" * 32, "2" * 16)})
live.stop()
tracing = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.proto", "sop_llm.infra.telemetry.otel")
print(json.dumps({"status": reply.status_code, "traceparent": reply.headers.get("traceparent"),
                  "added": sorted(m for m in sys.modules if m.startswith("opentelemetry") and m not in framework),
                  "tracing": sorted(m for m in sys.modules if m.startswith(tracing))}))
"""


def test_without_an_endpoint_nothing_of_opentelemetry_is_imported(upstream: RecordingUpstream, tmp_path: Path) -> None:
    folder = _config(tmp_path, upstream, local=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    before = len(upstream.headers)
    done = subprocess.run(
        [sys.executable, "-c", NOTHING_IMPORTED, str(folder)],
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "traceparent": None, "added": [], "tracing": []}
    (sent,) = upstream.headers[before:]
    assert "traceparent" not in sent


def test_exports_are_gzipped_with_the_collectors_headers_and_a_dead_collector_costs_nothing(
    upstream: RecordingUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_COMPRESSION and _HEADERS (URL-encoded, as the variables' format has it) reach the
    collector; a collector nobody listens on leaves every request answered and the service stopping at once."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20collector-token,x-tenant=team-a")
    folder = _config(tmp_path, upstream, local=False)
    receiver = Receiver().start()
    try:
        live = LiveServer(make_settings(CONFIG_DIR=str(folder), OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url)).start()
        try:
            trace = "8" + CALLER_TRACE[1:]
            _chat(live.url, "remote", {"traceparent": f"00-{trace}-{CALLER_SPAN}-01"})
            assert len(receiver.trace(trace, 2)) == 2  # decoded after gunzipping
        finally:
            live.stop()
    finally:
        receiver.stop()
    assert receiver.headers, "nothing was exported"
    for headers in receiver.headers:
        assert headers["content-encoding"] == "gzip"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["authorization"] == "Bearer collector-token"
        assert headers["x-tenant"] == "team-a"

    with socket.socket() as probe:  # a loopback port nobody listens on once the socket is closed
        probe.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{probe.getsockname()[1]}"
    live = LiveServer(make_settings(CONFIG_DIR=str(folder), OTEL_EXPORTER_OTLP_ENDPOINT=nobody))
    warnings: list[str] = []  # the app's own logging set up by now, this sink stays
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING", format="{message}")
    try:
        live.start()
        for _ in range(3):
            _chat(live.url, "remote")
    finally:
        live.stop()
        logger.remove(sink)
    # The exports were refused and said so (once: an outage, not every batch), the last one at shutdown included:
    # shutdown did not wait out the export timeout.
    refused = [w for w in warnings if w.startswith(f"OTLP export to {nobody}/v1/traces failed")]
    assert len(refused) == 1, warnings
    assert not any("did not finish in time" in w for w in warnings), warnings
    assert not live.running
