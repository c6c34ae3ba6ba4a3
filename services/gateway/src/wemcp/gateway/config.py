from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

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

    def service_urls(self) -> dict[str, str]:
        return {name: getattr(self, f"{name}_url").rstrip("/") for name in SERVICES}


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
