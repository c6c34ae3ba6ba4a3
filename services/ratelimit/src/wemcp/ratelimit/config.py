"""Settings of the ratelimit service: the quota settings every quota client reads
(:class:`wemcp.quota.config.QuotaSettings`, ``WEMCP_RATELIMIT_*``); the service adds nothing of its own."""

from __future__ import annotations

from functools import lru_cache

from wemcp.common.config import load_settings
from wemcp.quota.config import QuotaSettings


class Settings(QuotaSettings):
    pass


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
