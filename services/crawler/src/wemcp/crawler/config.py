from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, load_settings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_CRAWLER_", extra="ignore", populate_by_name=True)

    service_name: str = "crawler"

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
