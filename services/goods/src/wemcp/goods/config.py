from __future__ import annotations

from functools import lru_cache

from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, load_settings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_GOODS_", extra="ignore", populate_by_name=True)

    service_name: str = "goods"


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
