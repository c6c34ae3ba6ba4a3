"""Settings of the ratelimit service; the gateway builds the same object to configure its in-process
:class:`~wemcp.ratelimit.client.QuotaClient` (``QuotaClient.from_settings``)."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, load_settings
from wemcp.ratelimit.policy import Limits


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_RATELIMIT_", extra="ignore", populate_by_name=True)

    service_name: str = "ratelimit"
    # The quota day ends at midnight in this zone.
    day_zone: str = "Asia/Shanghai"
    # Used until an admin stores defaults of their own (PUT /api/v1/policies/defaults/...).
    server_daily_default: int = Field(default=1000, ge=0)
    agent_daily_default: int = Field(default=100, ge=0)
    server_global_cap_default: int | None = Field(default=None, ge=0)
    # Redis unreachable: refuse system-key calls (True) or let them through uncounted (False).
    fail_closed: bool = True
    redis_timeout_seconds: float = Field(default=0.25, gt=0)
    unavailable_retry_after_seconds: int = Field(default=5, ge=1)
    # Shared with the agents service, which signs the run contexts. Unset: no context is accepted.
    agent_run_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("WEMCP_AGENT_RUN_SECRET", "AGENT_RUN_SECRET",
                                                    "agent_run_secret"))
    agent_run_ttl_seconds: int = Field(default=900, gt=0)
    # NATS request/reply alternative to the in-process client.
    decide_subject: str = "ratelimit.decide"
    policy_max_age_seconds: float = Field(default=30.0, gt=0)

    def default_limits(self) -> dict[str, Limits]:
        """The defaults used until an admin stores their own."""
        return {"server": Limits(self.server_daily_default, self.server_global_cap_default),
                "agent": Limits(self.agent_daily_default, None)}

    @field_validator("day_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("agent_run_secret")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return v


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
