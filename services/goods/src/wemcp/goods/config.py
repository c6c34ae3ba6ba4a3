from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, TimeZoneName, load_settings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_GOODS_", extra="ignore", populate_by_name=True)

    service_name: str = "goods"
    # the free plan every product starts with: what the ratelimit service's defaults are
    # (WEMCP_RATELIMIT_SERVER_DAILY_DEFAULT / _AGENT_DAILY_DEFAULT); a free plan names them as data
    free_server_calls_per_day: int = Field(default=1000, ge=0)
    free_agent_calls_per_day: int = Field(default=100, ge=0)
    # usage is counted per local day in the quota's zone
    day_zone: TimeZoneName = "Asia/Shanghai"
    # where server.updated refreshes a product's name, title and description from (the catalog's
    # public detail); unset: only refreshed_at moves
    catalog_url: str | None = "http://127.0.0.1:8002"


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
