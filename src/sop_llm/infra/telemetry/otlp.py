"""OTLP/HTTP trace export: spans written straight to protobuf bytes (an `ExportTraceServiceRequest`) and POSTed.

Why not the SDK's span and OTLP exporter: measured at 64 connections, the SDK's span objects and its encoder (which
builds a message object per span, attribute and value) took a third of the gateway's throughput; this writer, of
the few fields our spans use, costs a few microseconds a span. The wire format is OTLP's (opentelemetry-proto
`trace/v1`); the tests decode it with the official messages.

The exporter reads the standard variables once, at startup: OTEL_EXPORTER_OTLP[_TRACES]_HEADERS,
_TIMEOUT (seconds), _COMPRESSION (gzip or none) and _CERTIFICATE. A failed export is logged and dropped, not retried.
`batch` queues the encoded spans and awaits `OTLPExporter.export` from its task.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import ssl
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from loguru import logger

from sop_llm.infra.telemetry.active import SpanShape

if TYPE_CHECKING:
    import aiohttp

_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
# A span's fixed-size fields with their tags (number << 3 | wire type: 0 varint, 1 fixed64, 2 length-delimited,
# 5 fixed32), packed in one call: trace_id (1, 16 bytes), span_id (2, 8 bytes), parent_span_id (4, 8 bytes; absent
# for a root span), kind (6), start_time_unix_nano (7), end_time_unix_nano (8) and flags (16, a two-byte tag).
# Protobuf fields may come in any order.
_CHILD_FIELDS = struct.Struct("<BB16sBB8sBB8sBBBQBQHI")
_ROOT_FIELDS = struct.Struct("<BB16sBB8sBBBQBQHI")
# Span.flags beyond the W3C trace flags: whether the parent is known to be remote, and whether it is.
HAS_IS_REMOTE = 0x100
IS_REMOTE = 0x200


class EncodableSpan(Protocol):
    shape: SpanShape  # the name and the attributes many spans have alike: encoded once, not per span
    kind: int  # OTLP SpanKind: 1 internal, 2 server, 3 client
    trace_id: bytes  # 16 bytes
    span_id: bytes  # 8 bytes
    parent_id: bytes  # 8 bytes, or empty: none
    flags: int  # the W3C trace flags, with HAS_IS_REMOTE / IS_REMOTE
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] | None  # the span's own
    events: list[tuple[str, int, Mapping[str, Any] | None]] | None  # (name, time in ns, attributes)
    error: bool
    message: str


_BYTE = [bytes((i,)) for i in range(256)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _BYTE[value]
    if 0 < value < 0x4000:  # a span's length, mostly
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (tag < 16: one byte)."""
    return _BYTE[tag << 3 | 2] + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, list | tuple):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    return _field(1, str(value).encode())


# Encoded attributes that repeat from span to span (most keys and many values: small token counts, a finish
# reason). Emptied when full, so values that stop coming do not stay. Span shapes keep their own encoding.
_PAIRS: dict[tuple[str, Any] | tuple[str, type, str], bytes] = {}
_MAX_KEPT = 8192


def _keep(cache: dict[Any, bytes], key: Any, encoded: bytes) -> bytes:
    if len(cache) >= _MAX_KEPT:
        cache.clear()
    cache[key] = encoded
    return encoded


def _encode_key_value(key: str, value: Any) -> bytes:
    body = _field(1, key.encode()) + _field(2, _any_value(value))
    return _varint(len(body)) + body


def encode_attributes(attributes: Iterable[tuple[str, Any]], tag: int) -> bytes:
    """(key, value) pairs as repeated KeyValue fields numbered `tag`. Runs for every span: a pair whose value is a
    str or an int (not a bool: True == 1 would share an entry), or a 1-tuple of a str (a finish reason), is encoded
    once and kept; others (floats, lists) each time."""
    head = _BYTE[tag << 3 | 2]
    pairs = _PAIRS
    out = []
    for key, value in attributes:
        kind = type(value)
        if kind is str or kind is int:
            cache_key: Any = (key, value)
        elif kind is tuple and len(value) == 1 and type(value[0]) is str:
            cache_key = (key, tuple, value[0])
        else:
            out.append(head)
            out.append(_encode_key_value(key, value))
            continue
        out.append(head)
        out.append(pairs.get(cache_key) or _keep(pairs, cache_key, _encode_key_value(key, value)))
    return b"".join(out)


def _encode_shape(shape: SpanShape) -> bytes:
    shape.encoded = _field(5, shape.name.encode()) + encode_attributes(shape.pairs, 9)
    return shape.encoded


def encode_span(span: EncodableSpan) -> bytes:
    """The span as a ScopeSpans.spans field: what `encode_request` joins.

    Every span a request opens passes here, on the event loop, so it is written for few Python operations: the
    fixed-size fields in one struct call, the name and the shared attributes encoded once per shape, the span's
    own few attributes mostly from a cache."""
    if span.parent_id:
        fixed = _CHILD_FIELDS.pack(
            0x0A, 16, span.trace_id, 0x12, 8, span.span_id, 0x22, 8, span.parent_id,
            0x30, span.kind, 0x39, span.start_ns, 0x41, span.end_ns, 0x0185, span.flags,
        )  # fmt: skip
    else:
        fixed = _ROOT_FIELDS.pack(
            0x0A, 16, span.trace_id, 0x12, 8, span.span_id,
            0x30, span.kind, 0x39, span.start_ns, 0x41, span.end_ns, 0x0185, span.flags,
        )  # fmt: skip
    shape = span.shape
    out = [fixed, shape.encoded or _encode_shape(shape)]
    if span.attributes:
        out.append(encode_attributes(span.attributes.items(), 9))
    for event_name, time_ns, attributes in span.events or ():
        event = b"\x09" + _FIXED64.pack(time_ns) + _field(2, event_name.encode())
        out.append(_field(11, event + (encode_attributes(attributes.items(), 3) if attributes else b"")))
    if span.error:
        out.append(_field(15, (_field(2, span.message.encode()) if span.message else b"") + b"\x18\x02"))
    body = b"".join(out)
    size = len(body)
    if 0x80 <= size < 0x4000:  # most spans: field 2 with a two-byte length, written here rather than by _field
        return b"\x12" + bytes((size & 0x7F | 0x80, size >> 7)) + body
    return _field(2, body)


def encode_scope(name: str, version: str) -> bytes:
    """The InstrumentationScope field of a ScopeSpans."""
    return _field(1, _field(1, name.encode()) + _field(2, version.encode()))


def encode_request(resource: Mapping[str, Any], scope: bytes, spans: Sequence[bytes]) -> bytes:
    """An ExportTraceServiceRequest: one ResourceSpans, one ScopeSpans holding `spans` (each from `encode_span`)."""
    scope_spans = _field(2, scope + b"".join(spans))
    return _field(1, _field(1, encode_attributes(resource.items(), 1)) + scope_spans)


def _variable(name: str) -> str | None:
    """OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name>."""
    return os.environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")


def _headers(value: str | None) -> dict[str, str]:
    """`key=value,key2=value2`, URL-encoded (the OTLP exporter variables' format)."""
    headers = {}
    for pair in (value or "").split(","):
        key, sep, item = pair.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip()).lower()] = unquote(item.strip())
    return headers


class OTLPExporter:
    """POSTs each batch of encoded spans it is handed to `endpoint`, on the event loop (its session is made there,
    on the first export)."""

    def __init__(self, endpoint: str, resource: Mapping[str, Any], scope: bytes) -> None:
        self._endpoint = endpoint
        self._resource = dict(resource)
        self._scope = scope
        self._headers = {"Content-Type": "application/x-protobuf", **_headers(_variable("HEADERS"))}
        self._gzip = (_variable("COMPRESSION") or "none").strip().lower() == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._timeout = float(_variable("TIMEOUT") or 10)
        certificate = _variable("CERTIFICATE")
        self._ssl = ssl.create_default_context(cafile=certificate) if certificate else True
        self._session: aiohttp.ClientSession | None = None
        self._failing = False

    async def export(self, spans: Sequence[bytes]) -> bool:
        """Whether the collector took them."""
        import aiohttp

        body = encode_request(self._resource, self._scope, spans)
        if self._gzip:  # zlib lets go of the GIL, so the loop goes on meanwhile
            body = await asyncio.to_thread(gzip.compress, body)
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=timeout)
        try:
            async with self._session.post(self._endpoint, data=body, ssl=self._ssl) as response:
                await response.read()
                failure = f"answered {response.status}" if response.status >= 300 else None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failure = f"failed: {exc or type(exc).__name__}"
        if failure is not None:
            if not self._failing:  # once per outage, not once per batch
                logger.warning("OTLP export to {} {}; {} spans dropped", self._endpoint, failure, len(spans))
            self._failing = True
            return False
        self._failing = False
        return True

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
