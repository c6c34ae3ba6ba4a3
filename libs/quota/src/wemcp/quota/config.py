"""The quota settings (``WEMCP_RATELIMIT_*``): the ratelimit service's settings are these, and the
gateway and the agents service build the same object from the same environment to configure their
in-process :class:`~wemcp.quota.client.QuotaClient` (``open_quota_client``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, TimeZoneName
from wemcp.quota.policy import Limits


class QuotaSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_RATELIMIT_", extra="ignore", populate_by_name=True)

    service_name: str = "ratelimit"
    # The quota day ends at midnight in this zone.
    day_zone: TimeZoneName = "Asia/Shanghai"
    # Used until an admin stores defaults of their own (PUT /api/v1/policies/defaults/...).
    server_daily_default: int = Field(default=1000, ge=0)
    agent_daily_default: int = Field(default=100, ge=0)
    server_global_cap_default: int | None = Field(default=None, ge=0)
    # Redis unreachable: refuse system-key calls (True) or let them through uncounted (False).
    fail_closed: bool = True
    redis_timeout_seconds: float = Field(default=0.25, gt=0)
    unavailable_retry_after_seconds: int = Field(default=5, ge=1)
    # Shared with the agents service, which signs the run contexts (comma-separated: a key ring, the
    # first signs). Unset: no context is accepted.
    agent_run_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("WEMCP_AGENT_RUN_SECRET", "AGENT_RUN_SECRET",
                                                    "agent_run_secret"))
    agent_run_ttl_seconds: int = Field(default=900, gt=0)
    policy_max_age_seconds: float = Field(default=30.0, gt=0)

    def default_limits(self) -> dict[str, Limits]:
        """The defaults used until an admin stores their own."""
        return {"server": Limits(self.server_daily_default, self.server_global_cap_default),
                "agent": Limits(self.agent_daily_default, None)}

    @field_validator("agent_run_secret")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        return check_run_secret(v)


def check_run_secret(v: SecretStr | None) -> SecretStr | None:
    """``WEMCP_AGENT_RUN_SECRET``: one secret, or a comma-separated key ring (the first signs,
    :mod:`wemcp.quota.runcontext`); each at least 16 characters."""
    if v is not None and any(len(p.strip()) < 16 for p in v.get_secret_value().split(",")):
        raise ValueError("must be at least 16 characters (each, when several are separated by commas)")
    return v

