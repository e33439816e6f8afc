"""OpenTelemetry traces, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, or OTEL_ENABLED=true (then to the SDK's default, localhost:4318).

Off, nothing of OpenTelemetry is imported: this module and `active` are all the request path touches, and a
request pays one context-variable read per provider call. On, `otel.Tracing` opens a SERVER span per HTTP request
(`otel.RequestTrace`), under which the provider spans open (services/routing/provider_span.py); each span is
written to protobuf by `otlp` when it ends, and `batch` POSTs them in batches from a task on the event loop.
docs/monitoring.md lists the spans' names and attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sop_llm.infra.settings import Settings
from sop_llm.infra.telemetry.active import current_request_trace

if TYPE_CHECKING:
    from sop_llm.infra.telemetry.otel import Tracing

__all__ = ["current_request_trace", "start_tracing", "tracing_wanted"]


def tracing_wanted(settings: Settings) -> bool:
    """An endpoint turns tracing on, and so does OTEL_ENABLED=true without one. OTEL_ENABLED=false (the old
    default, in many a `.env`) does not turn off the traces an endpoint asks for."""
    return bool(
        settings.otel_enabled or settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint
    )


def start_tracing(settings: Settings) -> Tracing | None:
    """The tracer for this app, or None (nothing imported) when tracing is off."""
    if not tracing_wanted(settings):
        return None
    from sop_llm.infra.telemetry.otel import Tracing

    return Tracing(settings)
