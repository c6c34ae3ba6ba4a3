from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from wemcp.common.clientaddr import ClientAddresses, parse_networks
from wemcp.common.config import ServiceSettings, load_settings

SERVICES = ("auth", "catalog", "goods", "deployer", "ratelimit", "crawler", "agents")


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_GATEWAY_", extra="ignore", populate_by_name=True)

    service_name: str = "gateway"
    port: int = Field(default=8000, ge=0, le=65535)

    # Where each service listens (the supervisor or compose sets these).
    auth_url: str = "http://127.0.0.1:8001"
    catalog_url: str = "http://127.0.0.1:8002"
    goods_url: str = "http://127.0.0.1:8003"
    deployer_url: str = "http://127.0.0.1:8004"
    ratelimit_url: str = "http://127.0.0.1:8005"
    crawler_url: str = "http://127.0.0.1:8006"
    agents_url: str = "http://127.0.0.1:8007"

    # The web console's built files (web/dist, built by `make install`), served at /.
    console_dir: Path = Path("web/dist")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    upstream_timeout_seconds: float = Field(default=30.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    upstream_max_connections: int = Field(default=200, ge=1)
    health_timeout_seconds: float = Field(default=2.0, gt=0)

    # Identity (see identity.py): must match the auth service's WEMCP_AUTH_JWT_ISSUER / _AUDIENCE.
    jwt_issuer: str = "wemcp"
    jwt_audience: str = "wemcp"
    jwks_refresh_seconds: float = Field(default=300.0, gt=0)
    jwks_min_refetch_seconds: float = Field(default=5.0, ge=0)
    api_key_cache_ttl_seconds: float = Field(default=300.0, gt=0)

    # The MCP router (mcp.py, wiring.py; docs/services/gateway.md).
    mcp_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    mcp_body_timeout_seconds: float = Field(default=10.0, gt=0)  # the whole body, or 408 (slow loris)
    mcp_keepalive_seconds: float = Field(default=15.0, gt=0)  # SSE comment lines on idle streams
    mcp_session_idle_seconds: float = Field(default=1800.0, gt=0)
    mcp_max_sessions: int = Field(default=100_000, ge=1)
    # No credentials on /mcp (and the REST tool calls): allowed, on the system key and counted per
    # client address, when true; refused 401 (pointing at free_key_url) when false. Unset: off in
    # production (WEMCP_ENV=production), on in development. See anonymous_allowed.
    mcp_allow_anonymous: bool | None = None
    free_key_url: str = "/api/v1/api-keys"  # where a signed-in user creates a free platform API key
    # Client addresses (wemcp.common.clientaddr): proxies whose forwarding header is believed, as
    # CIDRs (JSON list); none by default, so the address is the socket's peer.
    trusted_proxies: list[str] = Field(default_factory=list)
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    mcp_upstream_timeout_seconds: float = Field(default=120.0, gt=0)
    # {"slug": {"NAME": "value"}}: system keys from the environment (a secret store's injection);
    # the auth vault's system principal (nil user id) is read too when system_keys_from_vault.
    system_keys: SecretStr | None = None
    system_keys_from_vault: bool = True
    key_cache_ttl_seconds: float = Field(default=10.0, gt=0)
    # Call events (calls.py, spool.py; docs/services/gateway.md "Call events"): batches of at most
    # call_event_batch_calls calls / _bytes of JSON, gathered for call_event_linger_seconds.
    call_event_queue: int = Field(default=20_000, ge=1)  # calls waiting in memory (only a stalled disk fills it)
    call_event_linger_seconds: float = Field(default=0.02, ge=0)
    call_event_batch_calls: int = Field(default=1000, ge=1, le=10_000)
    call_event_batch_bytes: int = Field(default=512 * 1024, ge=4096, le=1024 * 1024 - 4096)
    call_event_ack_timeout_seconds: float = Field(default=2.0, gt=0)
    call_event_drain_seconds: float = Field(default=3.0, ge=0)  # on SIGTERM; the rest goes to the spool
    # The durable spool of batches NATS did not take (one directory per gateway process; empty: none,
    # events are then dropped while NATS is away). Default sized for 5 minutes at 2,000 calls/s with
    # room to spare (about 360 B a call).
    spool_dir: Path | None = Path(".data/gateway/spool")
    spool_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=64 * 1024)
    spool_linger_seconds: float = Field(default=0.1, ge=0)  # batches gather this long while NATS is away
    route_replay_wait_seconds: float = Field(default=10.0, ge=0)
    quota_enabled: bool = True
    # Who may call /mcp/... from a web page (the spec's Origin rule; DNS rebinding): origins allowed
    # besides the request's own (scheme://host[:port], JSON list; "*" for any). A request without
    # Origin (every non-browser client) is always allowed; another origin gets 403.
    mcp_allowed_origins: list[str] = Field(default_factory=list)
    # The Host names /mcp/... answers to (host or host:port, JSON list); empty: any. A deployment on
    # a loopback address should list its names (e.g. ["localhost", "127.0.0.1", "[::1]"]).
    mcp_allowed_hosts: list[str] = Field(default_factory=list)
    # Several gateway replicas (sessions.py, docs/scaling.md): the URL the other replicas reach this one
    # at (e.g. http://$(POD_IP):8000), announced in Redis; a request of an MCP session (or a parked call)
    # this replica does not own is forwarded to the owner's. Unset: one replica, nothing forwarded.
    peer_url: str | None = None
    peer_ttl_seconds: float = Field(default=15.0, ge=1)  # an announcement not renewed this long is gone
    peer_timeout_seconds: float = Field(default=2.0, gt=0)  # connecting to a peer

    @field_validator("spool_dir", mode="before")
    @classmethod
    def _no_spool(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        parse_networks(v)
        return v

    @property
    def anonymous_allowed(self) -> bool:
        if self.mcp_allow_anonymous is not None:
            return self.mcp_allow_anonymous
        return self.environment != "production"

    @cached_property
    def console_path(self) -> Path:
        """``console_dir`` as given when absolute or present from the working directory; else beside
        this checkout's ``web/`` (a service started from another directory)."""
        if self.console_dir.is_absolute() or self.console_dir.exists():
            return self.console_dir.resolve()
        return (Path(__file__).resolve().parents[5] / self.console_dir).resolve()

    @cached_property
    def client_addresses(self) -> ClientAddresses:
        return ClientAddresses(self.trusted_proxies, self.forwarded_header)

    def service_urls(self) -> dict[str, str]:
        return {name: getattr(self, f"{name}_url").rstrip("/") for name in SERVICES}


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
