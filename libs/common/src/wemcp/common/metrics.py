"""The platform's OpenTelemetry metrics: every instrument a dashboard or alert reads is named here,
once, and created through :func:`instrument` (so a test can check each dashboard query against what
the code emits, under the names the collector exports: ``deploy/otel/collector.yaml``).

How an OTel name becomes a Prometheus name (the collector's ``prometheus`` exporter): dots become
underscores; the unit is appended as a word (``ms`` -> ``milliseconds``, ``s`` -> ``seconds``,
``By`` -> ``bytes``; units in braces such as ``{call}`` are dropped) unless the name already holds
it; counters get ``_total``; histograms are read as ``_bucket``, ``_sum`` and ``_count``. See
:func:`prometheus_name`.

Who emits what:

- MCP calls, quota decisions: the crawler's request-log consumer, from the gateway's call events
  (``wemcp.crawler.logs_handlers``), so the gateway's hot path does no metric work per call.
- deployments: the deployer, when a deployment ends.
- consumer lag, outbox backlog: every service's runtime (``wemcp.common.service.LagWatcher``).
- spool: the gateway's call recorder (``wemcp.gateway.calls``).
- crawler runs, probe results: the crawler's crawl and probe modules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from wemcp.common.telemetry import meter

Kind = Literal["counter", "histogram", "gauge", "updown"]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...] = ()
    emitted_by: str = ""


def _m(name: str, kind: Kind, unit: str, description: str, attributes: Sequence[str] = (),
       emitted_by: str = "") -> Metric:
    return Metric(name, kind, unit, description, tuple(attributes), emitted_by)


# -- MCP calls (crawler, from call events) ---------------------------------------------------------------
MCP_CALLS = _m("wemcp.mcp.calls", "counter", "{call}", "completed MCP calls",
               ("server", "method", "outcome"), "crawler")
MCP_CALL_DURATION = _m("wemcp.mcp.call.duration", "histogram", "ms", "MCP call latency at the gateway",
                       ("server", "method", "outcome"), "crawler")
# -- quota (crawler, from call events: every tools/call had a decision) -------------------------------------
QUOTA_DECISIONS = _m("wemcp.quota.decisions", "counter", "{decision}", "quota decisions on tools/call",
                     ("server", "outcome"), "crawler")
# -- deployments (deployer) ------------------------------------------------------------------------------
DEPLOYMENTS = _m("wemcp.deployments", "counter", "{deployment}", "deployments finished",
                 ("backend", "outcome"), "deployer")
DEPLOYMENT_DURATION = _m("wemcp.deployment.duration", "histogram", "s", "time from start to deployed or failed",
                         ("backend", "outcome"), "deployer")
# -- the bus (every service) -----------------------------------------------------------------------------
CONSUMER_LAG = _m("wemcp.bus.consumer.lag", "gauge", "{message}",
                  "messages in the stream not yet delivered to the durable consumer",
                  ("durable", "stream"), "common")
CONSUMER_ACK_PENDING = _m("wemcp.bus.consumer.ack_pending", "gauge", "{message}",
                          "messages delivered to the durable consumer and not yet acknowledged",
                          ("durable", "stream"), "common")
OUTBOX_PENDING = _m("wemcp.outbox.pending", "gauge", "{event}", "outbox rows not yet published",
                    ("schema",), "common")
OUTBOX_AGE = _m("wemcp.outbox.oldest.age", "gauge", "s", "age of the oldest outbox row not yet published",
                ("schema",), "common")
# -- the gateway's call-event spool ---------------------------------------------------------------------
SPOOL_BYTES = _m("gateway.call_events.spool_bytes", "gauge", "By", "bytes in the spool not yet published",
                 (), "gateway")
SPOOL_LIMIT = _m("gateway.call_events.spool_limit_bytes", "gauge", "By", "the spool's size limit",
                 (), "gateway")
CALL_EVENTS_DROPPED = _m("gateway.call_events.dropped", "counter", "{call}", "call events lost (spool full)",
                         (), "gateway")
# -- crawler runs and probes (the crawler's crawl and probe modules emit them) ------------------------------
CRAWLER_RUNS = _m("wemcp.crawler.runs", "counter", "{run}", "crawl runs finished",
                  ("source", "outcome"), "crawler")
CRAWLER_SERVERS = _m("wemcp.crawler.servers", "counter", "{server}", "servers a crawl found",
                     ("source", "kind"), "crawler")  # kind: new, updated, unchanged
CRAWLER_RUN_DURATION = _m("wemcp.crawler.run.duration", "histogram", "s", "duration of a crawl run",
                          ("source", "outcome"), "crawler")
PROBE_RESULTS = _m("wemcp.probe.results", "counter", "{probe}", "health probes by result",
                   ("status",), "crawler")  # status: up, degraded, down, idle
PROBE_DURATION = _m("wemcp.probe.duration", "histogram", "ms", "health probe latency (initialize + tools/list)",
                    ("status",), "crawler")
# -- what the runtime already emitted before this module ----------------------------------------------------
HTTP_SERVER_DURATION = _m("http.server.duration", "histogram", "ms", "HTTP request duration",
                          ("http.request.method", "http.response.status_code"), "common")
OUTBOX_PUBLISHED = _m("outbox.published", "counter", "", "events relayed to JetStream", (), "common")
OUTBOX_LAG = _m("outbox.lag", "histogram", "ms", "outbox commit to PubAck", (), "common")
BUS_MESSAGES = _m("bus.messages", "counter", "", "messages handled by outcome", ("consumer", "outcome"), "common")

ALL: tuple[Metric, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Metric))

_UNIT_WORDS = {"ms": "milliseconds", "s": "seconds", "By": "bytes", "1": "ratio"}


def prometheus_name(m: Metric) -> str:
    """The metric's name as the collector's Prometheus exporter writes it (the base name: a histogram's
    series add ``_bucket``/``_sum``/``_count``)."""
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", m.name)
    tokens = [t for t in name.split("_") if t]
    unit = _UNIT_WORDS.get(m.unit, "" if (not m.unit or m.unit.startswith("{")) else m.unit)
    if unit and unit not in tokens:
        tokens.append(unit)
    if m.kind == "counter" and "total" not in tokens:
        tokens.append("total")
    return "_".join(tokens)


def prometheus_series(m: Metric) -> tuple[str, ...]:
    base = prometheus_name(m)
    if m.kind == "histogram":
        return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
    return (base,)


def instrument(m: Metric, scope: str = "wemcp", callbacks: Sequence[Callable[..., Any]] = ()) -> Any:
    """The OTel instrument for ``m`` on the meter ``scope``; gauges take their ``callbacks``."""
    mt = meter(scope)
    if m.kind == "counter":
        return mt.create_counter(m.name, unit=m.unit, description=m.description)
    if m.kind == "histogram":
        return mt.create_histogram(m.name, unit=m.unit, description=m.description)
    if m.kind == "updown":
        return mt.create_up_down_counter(m.name, unit=m.unit, description=m.description)
    return mt.create_observable_gauge(m.name, list(callbacks), unit=m.unit, description=m.description)
