"""Settings shared by every service.

Each service subclasses :class:`ServiceSettings` with its own env prefix (``WEMCP_CATALOG_`` ...).
The infrastructure URLs and the telemetry settings are read from the unprefixed names every operator
knows (``DATABASE_URL``, ``NATS_URL``, ``REDIS_URL``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``LOG_LEVEL``),
so one environment configures the whole platform.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from wemcp.common.errors import ConfigError
from wemcp.common.netpolicy import EgressPolicy, parse_allow
from wemcp.common.trust import DEVELOPMENT_KEYS, KeyRing

S = TypeVar("S", bound=BaseSettings)


def _alias(prefix: str, name: str) -> AliasChoices:
    return AliasChoices(f"{prefix}{name}", name)


class ServiceSettings(BaseSettings):
    """Base for every service's settings. Subclasses set ``model_config`` with their env prefix
    and add their own fields; the shared fields below keep working through the unprefixed names."""

    model_config = SettingsConfigDict(env_prefix="WEMCP_", extra="ignore", populate_by_name=True)

    service_name: str = "wemcp"
    environment: Literal["development", "production"] = Field(
        default="development", validation_alias=AliasChoices("WEMCP_ENV", "environment"))
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/wemcp",
        validation_alias=AliasChoices("DATABASE_URL", "WEMCP_DATABASE_URL"),
    )
    nats_url: str = Field(
        default="nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL", "WEMCP_NATS_URL")
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "WEMCP_REDIS_URL")
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", validation_alias=AliasChoices("LOG_LEVEL", "WEMCP_LOG_LEVEL")
    )
    log_format: Literal["json", "console"] = Field(
        default="json", validation_alias=AliasChoices("LOG_FORMAT", "WEMCP_LOG_FORMAT")
    )
    otel_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "WEMCP_OTEL_ENDPOINT"),
    )
    # How long JetStream waits for an ack before redelivering; short in tests, 30 s in production.
    bus_ack_wait_seconds: float = Field(
        default=30.0, gt=0, validation_alias=AliasChoices("WEMCP_BUS_ACK_WAIT_SECONDS", "BUS_ACK_WAIT_SECONDS")
    )
    # The platform's service-to-service keys (wemcp.common.trust): "kid:secret,kid:secret", first signs.
    service_keys: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("WEMCP_SERVICE_KEYS"))
    startup_timeout_seconds: float = Field(default=10.0, gt=0)
    # Hosts, IPs and CIDRs that user-supplied URLs may reach although they are not public
    # (wemcp.common.netpolicy); tests list their loopback servers here.
    egress_allow: str = Field(default="", validation_alias=AliasChoices("WEMCP_EGRESS_ALLOW", "egress_allow"))
    db_pool_size: int = Field(default=10, ge=1)

    @field_validator("database_url", "nats_url", "redis_url")
    @classmethod
    def _check_infrastructure_url(cls, v: str, info: ValidationInfo) -> str:
        return _check_url(v, _URL_SCHEMES[info.field_name or ""])

    @field_validator("egress_allow")
    @classmethod
    def _check_egress_allow(cls, v: str) -> str:
        parse_allow(v)  # a ValueError names the bad entry
        return v

    @field_validator("service_keys")
    @classmethod
    def _check_service_keys(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            KeyRing.parse(v.get_secret_value())  # a malformed ring fails at start-up, not on a call
        return v

    @model_validator(mode="after")
    def _production_needs_explicit_infrastructure(self) -> ServiceSettings:
        # In production a forgotten URL must not silently fall back to localhost.
        if self.environment == "production":
            missing = [env for name, env in (("database_url", "DATABASE_URL"), ("nats_url", "NATS_URL"),
                                             ("redis_url", "REDIS_URL")) if name not in self.model_fields_set]
            if self.service_keys is None:
                # without it every service would trust the published development key
                missing.append("WEMCP_SERVICE_KEYS")
            if missing:
                raise ValueError(f"{', '.join(missing)} must be set when WEMCP_ENV=production")
        return self

    @cached_property
    def egress(self) -> EgressPolicy:
        """The process's egress policy for user-supplied URLs (one object, shared by its clients)."""
        return EgressPolicy(self.egress_allow)

    @cached_property
    def key_ring(self) -> KeyRing:
        """The service-to-service keys; the published development key when none is set (refused in
        production by the validator above)."""
        raw = self.service_keys.get_secret_value() if self.service_keys is not None else DEVELOPMENT_KEYS
        return KeyRing.parse(raw)

    @cached_property
    def async_database_url(self) -> str:
        """The URL in SQLAlchemy's asyncpg dialect form."""
        scheme, rest = self.database_url.split("://", 1)
        return f"postgresql+asyncpg://{rest}" if scheme != "postgresql+asyncpg" else self.database_url

    @cached_property
    def plain_database_url(self) -> str:
        """The URL as libpq and asyncpg.connect() understand it."""
        return "postgresql://" + self.database_url.split("://", 1)[1]


# the schemes each infrastructure URL may have
_URL_SCHEMES = {
    "database_url": {"postgresql", "postgres", "postgresql+asyncpg"},
    "nats_url": {"nats", "tls"},
    "redis_url": {"redis", "rediss", "unix"},
}


def _check_url(value: str, schemes: set[str]) -> str:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError as exc:
        raise ValueError(f"malformed URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be one of {sorted(schemes)}, got {parts.scheme or 'none'!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("URL has no host")
    return value


def check_zone(value: str) -> str:
    """An IANA time zone name (``Asia/Shanghai``, ``UTC``); anything else is a ValueError."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


# A setting naming a time zone (the quota day's ``day_zone``): refused at start when unknown.
TimeZoneName = Annotated[str, AfterValidator(check_zone)]


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings, turning a validation failure into one line that names the setting."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(cls, exc)) from None


def describe_validation_error(cls: type[BaseSettings], exc: ValidationError) -> str:
    prefix = cls.model_config.get("env_prefix", "") or ""
    parts = []
    for err in exc.errors():
        if not err["loc"]:  # a model-level rule: its message names the settings itself
            parts.append(err["msg"].removeprefix("Value error, "))
            continue
        field = str(err["loc"][0])
        info = cls.model_fields.get(field)
        if info is None:
            env_name = field.upper()  # the error is located at the alias actually used (NATS_URL)
        else:
            alias = info.validation_alias
            env_name = str(alias.choices[0]) if isinstance(alias, AliasChoices) else f"{prefix}{field}".upper()
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{env_name}: {msg}")
    return "invalid configuration: " + "; ".join(parts)
