"""The crawler's own metrics (names in ``wemcp.common.metrics``): crawl runs, what they found, and
health probe results. Instruments are made on first use, so they bind to the meter provider the
service's runtime (or a test) installed."""

from __future__ import annotations

from wemcp.common import metrics


class CrawlerMetrics:
    def __init__(self) -> None:
        scope = "wemcp.crawler"
        self.runs = metrics.instrument(metrics.CRAWLER_RUNS, scope)
        self.servers = metrics.instrument(metrics.CRAWLER_SERVERS, scope)
        self.run_duration = metrics.instrument(metrics.CRAWLER_RUN_DURATION, scope)
        self.probes = metrics.instrument(metrics.PROBE_RESULTS, scope)
        self.probe_duration = metrics.instrument(metrics.PROBE_DURATION, scope)

    def page(self, source: str, found: int, new: int, updated: int) -> None:
        """One applied page of a crawl: its servers by what happened to them."""
        for kind, n in (("new", new), ("updated", updated), ("unchanged", max(found - new - updated, 0))):
            if n:
                self.servers.add(n, {"source": source, "kind": kind})

    def run(self, source: str, outcome: str, seconds: float) -> None:
        """A run that ended: ``finished``, ``failed`` or ``interrupted``."""
        attrs = {"source": source, "outcome": outcome}
        self.runs.add(1, attrs)
        self.run_duration.record(seconds, attrs)

    def probe(self, status: str, latency_ms: float | None) -> None:
        """One probe's result (``idle`` without a probe sent: no latency)."""
        self.probes.add(1, {"status": status})
        if latency_ms is not None:
            self.probe_duration.record(latency_ms, {"status": status})


_made: list[CrawlerMetrics] = []


def crawler_metrics() -> CrawlerMetrics:
    if not _made:
        _made.append(CrawlerMetrics())
    return _made[0]


