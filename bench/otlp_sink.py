"""A loopback OTLP/HTTP trace receiver for the request-log phase: it accepts `POST /v1/traces`, answers 200 with an
empty ExportTraceServiceResponse (zero protobuf bytes) and only counts what it got (exports, bytes and spans: the
spans against the requests served tell whether the exporter dropped any); `GET /stats` tells the counts.

    python -m bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
import gzip

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

COUNTS = web.AppKey("counts", dict[str, int])


async def traces(request: web.Request) -> web.Response:
    body = await request.read()
    counts = request.app[COUNTS]
    counts["requests"] += 1
    counts["bytes"] += len(body)
    if request.headers.get("Content-Encoding") == "gzip":  # OTEL_EXPORTER_OTLP_COMPRESSION=gzip
        body = gzip.decompress(body)
    exported = ExportTraceServiceRequest.FromString(body)
    counts["spans"] += sum(len(scope.spans) for resource in exported.resource_spans for scope in resource.scope_spans)
    return web.Response(body=b"", content_type="application/x-protobuf")


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[COUNTS])


def app() -> web.Application:
    application = web.Application(client_max_size=64 * 2**20)
    application[COUNTS] = {"requests": 0, "bytes": 0, "spans": 0}
    application.router.add_post("/v1/traces", traces)
    application.router.add_get("/stats", stats)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
