from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, load_settings

SOURCES = ("registry", "npm", "pypi")


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_CRAWLER_", extra="ignore", populate_by_name=True)

    service_name: str = "crawler"
    port: int = 8006

    # ---- discovery crawls (crawl.py, sources.py) ------------------------------------------------
    # The real registries are the defaults; every fetch goes through the egress policy.
    registry_url: str = "https://registry.modelcontextprotocol.io"
    npm_search_url: str = "https://registry.npmjs.org"
    pypi_url: str = "https://pypi.org"
    # npm's search API (``GET /-/v1/search?text=...``): one crawl walks each query's results
    npm_queries: list[str] = Field(default_factory=lambda: ["keywords:mcp-server", "keywords:modelcontextprotocol"])
    npm_max_results: int = Field(default=2000, ge=1, le=100_000)  # per query and run
    # PyPI has no search API: these names are looked up (with those registry entries name)
    pypi_packages: list[str] = Field(default_factory=lambda: ["mcp-server-time", "mcp-server-fetch",
                                                             "mcp-server-git", "mcp-server-sqlite"])
    crawl_sources: list[str] = Field(default_factory=lambda: list(SOURCES))
    # Scheduled crawls are off unless asked for (``make run`` leaves them off; production sets it)
    crawl_schedule: bool = False
    crawl_interval_seconds: float = Field(default=6 * 3600, gt=0)
    # at most one request per this many seconds per source (politeness towards the registries)
    crawl_request_interval_seconds: float = Field(default=1.0, ge=0)
    crawl_timeout_seconds: float = Field(default=20.0, gt=0)
    crawl_page_size: int = Field(default=100, ge=1, le=100)  # registry page (its maximum is 100)
    crawl_max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    crawl_retries: int = Field(default=3, ge=0, le=10)  # on 429/5xx/transport errors, with backoff
    crawl_lease_seconds: float = Field(default=300.0, gt=0)  # a run holding a source (renewed per page)

    # ---- health probes (probes.py) --------------------------------------------------------------
    # Probes go to the gateway's MCP endpoint (/mcp/<slug>), the path users take, with the crawler's
    # service credential; the gateway's host is admitted to the egress policy by name.
    gateway_url: str = "http://127.0.0.1:8000"
    probe_schedule: bool = False  # off unless asked for (``make run`` leaves it off; production sets it)
    probe_interval_seconds: float = Field(default=300.0, gt=0)
    probe_tick_seconds: float = Field(default=5.0, gt=0)  # how often due probes are looked for
    probe_timeout_seconds: float = Field(default=20.0, gt=0)
    probe_slow_ms: float = Field(default=3000.0, gt=0)  # slower answers are "degraded"
    probe_concurrency: int = Field(default=4, ge=1, le=64)
    # A hosted server with no call for this long is scaled to zero by the deployer (its default
    # idle time): it shows "idle" and is probed once per idle_probe_interval_seconds, not woken
    # every interval. A call to it (mcp.call.* events) brings it back to the normal interval.
    idle_after_seconds: float = Field(default=600.0, gt=0)
    idle_probe_interval_seconds: float = Field(default=6 * 3600, gt=0)
    # a server.health event at least this often per server (and at once when its status or tools change)
    health_report_seconds: float = Field(default=3600.0, ge=0)
    probe_retention_days: int = Field(default=8, ge=7)

    # -- request logs (wemcp.crawler.logs*) ---------------------------------------------------------
    # how long a call stays in the request log: day partitions older than this are dropped
    logs_retention_days: int = Field(default=30, ge=1, le=3650)
    # day partitions created ahead of time (today included); a call for a later day creates its own
    logs_partitions_ahead: int = Field(default=3, ge=1, le=60)
    # how often partitions are created ahead and expired ones dropped
    logs_maintenance_seconds: float = Field(default=3600.0, gt=0)
    # the key of the per-server caller pseudonyms owners see; unset: derived from the service key ring
    # (then rotating the signing key changes every pseudonym)
    logs_pseudonym_key: SecretStr | None = None
    # the most rows one CSV export returns (the response says where to continue when there are more)
    logs_export_max_rows: int = Field(default=100_000, ge=1, le=1_000_000)


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
