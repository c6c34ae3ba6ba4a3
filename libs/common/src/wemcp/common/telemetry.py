"""OpenTelemetry traces and metrics.

Exporters are configured only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Without it nothing would
receive spans, so none are recorded (sampler ``always_off``, unless ``OTEL_TRACES_SAMPLER`` says
otherwise): every request still gets a span context with fresh ids, so trace ids appear in logs and
travel across HTTP and NATS, but no span data is built just to be dropped (a few percent of the
gateway's CPU per call).
W3C ``traceparent`` carries the context over HTTP headers and NATS message headers alike.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, Status, StatusCode

_configured = False


def setup_telemetry(service: str, otlp_endpoint: str | None) -> None:
    """Install the global tracer and meter providers once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    # service.instance.id: one series per process (the collector's Prometheus exporter makes it the
    # `instance` and `service_instance_id` labels), so replicas of a service are told apart
    resource = Resource.create({"service.name": f"wemcp-{service}", "service.namespace": "wemcp",
                                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"})
    sampler = None if otlp_endpoint or os.environ.get("OTEL_TRACES_SAMPLER") else ALWAYS_OFF
    provider = TracerProvider(resource=resource, sampler=sampler)  # None: the SDK reads OTEL_TRACES_SAMPLER
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        base = otlp_endpoint.rstrip("/")
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    trace.set_tracer_provider(provider)


def tracer(name: str = "wemcp") -> trace.Tracer:
    return trace.get_tracer(name)


def meter(name: str = "wemcp") -> metrics.Meter:
    return metrics.get_meter(name)


def inject_headers(carrier: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The current trace context as headers (``traceparent``, ``tracestate``)."""
    out: dict[str, str] = dict(carrier or {})
    propagate.inject(out)
    return out


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


class TracingMiddleware:
    """Pure ASGI middleware: one server span per HTTP request, continuing an incoming
    ``traceparent``, and an ``http.server.duration`` histogram."""

    def __init__(self, app: Any, service: str) -> None:
        self.app = app
        self.tracer = tracer(f"wemcp.{service}.http")
        self.duration = meter(f"wemcp.{service}.http").create_histogram(
            "http.server.duration", unit="ms", description="HTTP request duration")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("headers", [])
        # most calls carry no trace context: then there is nothing to extract (a new trace starts)
        parent = extract_context({k.decode("latin-1"): v.decode("latin-1") for k, v in raw}) \
            if any(k in _CONTEXT_HEADERS for k, _ in raw) else None
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        status_holder = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["code"] = message["status"]
            await send(message)

        start = time.perf_counter()
        with self.tracer.start_as_current_span(
            f"{method} {_route_template(path)}", context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                code = status_holder["code"]
                span.set_attribute("http.response.status_code", code)
                if code >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                self.duration.record((time.perf_counter() - start) * 1000,
                                     {"http.request.method": method, "http.response.status_code": code})


_CONTEXT_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


def _route_template(path: str) -> str:
    # Keep span names low-cardinality: /api/v1/servers/abc -> /api/v1/servers/{id}
    parts = path.split("/")
    return "/".join(p if (i < 4 or not p) else "{id}" for i, p in enumerate(parts))
