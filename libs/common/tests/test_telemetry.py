"""Traces and metrics leave a real service process over OTLP/HTTP when an endpoint is configured."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2 as httpx
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from wemcp.devstack.infra import free_port


class Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spans_and_metrics_are_exported_with_the_incoming_trace(infra):
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    svc_port = free_port()
    env = {**os.environ, **infra.env(), "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
           "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300",
           "WEMCP_GOODS_PORT": str(svc_port)}
    proc = subprocess.Popen([sys.executable, "-m", "wemcp.goods.main"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{svc_port}/api/v1/services/goods",
                              headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:] \
                if proc.poll() is not None else "service did not start"
            time.sleep(0.1)

        def spans() -> list:
            out = []
            for path, body in list(Collector.received):
                if path == "/v1/traces":
                    req = ExportTraceServiceRequest.FromString(body)
                    for rs in req.resource_spans:
                        attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            out += [(attrs.get("service.name"), s.trace_id.hex(), s.name) for s in ss.spans]
            return out

        def metric_names() -> set[str]:
            names = set()
            for path, body in list(Collector.received):
                if path == "/v1/metrics":
                    for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
                        for sm in rm.scope_metrics:
                            names |= {m.name for m in sm.metrics}
            return names

        deadline = time.monotonic() + 20
        while not (any(t == trace_id and n.startswith("GET ") for _, t, n in spans())
                   and "http.server.duration" in metric_names()):
            assert time.monotonic() < deadline, (spans(), metric_names())
            time.sleep(0.1)
        ours = [(service, name) for service, t, name in spans() if t == trace_id]
        assert ("wemcp-goods", "GET /api/v1/services/{id}") in ours, ours
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()
