"""Every metric a Grafana dashboard (deploy/grafana/dashboards) or a Prometheus alert rule
(deploy/prometheus/alerts.yml) queries is one the code emits, under the name the collector
(deploy/otel/collector.yaml) exports it as, with the labels the queries group and filter by.

The names: ``wemcp.common.metrics`` lists every instrument (OTel name, kind, unit, attributes);
``prometheus_name`` is the collector's translation; the code must create the instrument (through
``metrics.instrument(metrics.X)`` or ``create_*("name", ...)``) somewhere outside that module."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from wemcp.common import metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
COLLECTOR = ROOT / "deploy" / "otel" / "collector.yaml"

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
# labels every series has (the resource, as the collector converts it) or that PromQL makes
COMMON_LABELS = {"le", "service_name", "service_namespace", "service_instance_id", "job", "instance"}
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for p in _panels(dash):
            for t in p.get("targets", []):
                out.append((f"{path.name}: {p['title']}", t["expr"]))
        for v in dash.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(rf"label_values\(({IDENT}),\s*({IDENT})\)", q or "")
            if m:
                out.append((f"{path.name}: variable {v['name']}", f"{m.group(1)}{{{m.group(2)}!=\"\"}}"))
    return out


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(f"alerts.yml: {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]


def parse(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression uses."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    labels: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", e):
        labels |= set(re.findall(rf"({IDENT})\s*(?:=~|!~|!=|=)", body))
    for body in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        labels |= {x.strip() for x in body.split(",") if x.strip()}
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\w+", " ", e)
    names = {m.group(1) for m in re.finditer(rf"(?<![\w$.:])({IDENT})(?![\w:])(?!\s*\()", e)
             if m.group(1).lower() not in KEYWORDS}
    return names, labels


SERIES = {s: m for m in metrics.ALL for s in metrics.prometheus_series(m)}
SOURCES = [p for base in ("services", "libs") for p in (ROOT / base).glob("*/src/**/*.py")
           if p.name != "metrics.py" or "common" not in p.parts]
CODE = "\n".join(p.read_text() for p in SOURCES)
CONSTANTS = {id(v): k for k, v in vars(metrics).items() if isinstance(v, metrics.Metric)}


def emitted(m: metrics.Metric) -> bool:
    const = CONSTANTS[id(m)]
    if re.search(rf"\bmetrics\.{const}\b", CODE):
        return True
    return re.search(rf'create_\w+\(\s*"{re.escape(m.name)}"', CODE) is not None


QUERIES = dashboard_queries() + alert_queries()


def test_there_are_dashboards_and_alerts_to_check() -> None:
    names = {p.name for p in DASHBOARDS}
    assert {"wemcp.json", "wemcp-platform.json"} <= names
    assert len(alert_queries()) >= 6
    assert all(parse(q)[0] for _, q in QUERIES)


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_queried_metric_is_emitted_with_its_labels(where: str, expr: str) -> None:
    names, labels = parse(expr)
    used = []
    for name in names:
        assert name in SERIES, f"{where}: {name} is not a series of any instrument in wemcp.common.metrics"
        m = SERIES[name]
        assert emitted(m), f"{where}: nothing in the code creates {m.name}"
        used.append(m)
    allowed = COMMON_LABELS | {a.replace(".", "_") for m in used for a in m.attributes}
    assert labels <= allowed, f"{where}: labels {sorted(labels - allowed)} are no attribute of {sorted(names)}"


def test_the_collector_exports_under_the_names_the_translation_assumes() -> None:
    cfg = yaml.safe_load(COLLECTOR.read_text())
    exporters = cfg["service"]["pipelines"]["metrics"]["exporters"]
    prom = [e for e in exporters if e.split("/")[0] == "prometheus"]
    assert prom, "metrics no longer go to the Prometheus exporter"
    conf = cfg["exporters"][prom[0]] or {}
    assert not conf.get("namespace"), "a namespace would prefix every name"
    assert conf.get("add_metric_suffixes", True) is True, "without suffixes units and _total are not appended"
    assert conf.get("resource_to_telemetry_conversion", {}).get("enabled") is True  # service_* labels
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in prometheus["rule_files"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_the_translation_matches_the_collectors_on_known_names() -> None:
    # the names the overview dashboard read from a running collector before this module existed
    assert metrics.prometheus_name(metrics.HTTP_SERVER_DURATION) == "http_server_duration_milliseconds"
    assert metrics.prometheus_name(metrics.BUS_MESSAGES) == "bus_messages_total"
    assert metrics.prometheus_name(metrics.OUTBOX_LAG) == "outbox_lag_milliseconds"
    assert metrics.prometheus_name(metrics.SPOOL_BYTES) == "gateway_call_events_spool_bytes"  # no second _bytes
    assert metrics.prometheus_name(metrics.MCP_CALLS) == "wemcp_mcp_calls_total"  # {call}: no unit word
    assert metrics.prometheus_name(metrics.OUTBOX_AGE) == "wemcp_outbox_oldest_age_seconds"
    assert len({m.name for m in metrics.ALL}) == len(metrics.ALL)


def test_the_parser_finds_what_a_query_uses() -> None:
    names, labels = parse('histogram_quantile(0.95, sum by (le, server) (rate(x_bucket{server=~"$s", outcome!="ok"}'
                          '[$__rate_interval]))) / on(job) y > 0.5 and z offset 5m')
    assert names == {"x_bucket", "y", "z"} and labels == {"le", "server", "outcome", "job"}
