"""Settings of the auth service (env prefix ``WEMCP_AUTH_``; nested with ``__``, e.g.
``WEMCP_AUTH_GITHUB__CLIENT_ID``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, load_settings


class ProviderConfig(BaseModel):
    """One OAuth 2.0 login provider. Endpoints are configurable (GitHub Enterprise, tests)."""

    client_id: str = ""
    client_secret: str = ""
    authorize_url: str
    token_url: str
    userinfo_url: str
    # GitHub only: where to find the primary verified e-mail when the profile hides it.
    emails_url: str | None = None
    scope: str = ""
    pkce: bool = True
    token_endpoint_auth_method: str = "client_secret_post"  # noqa: S105

    @property
    def enabled(self) -> bool:
        return bool(self.client_id and self.client_secret)


def _endpoints(authorize_url: str, token_url: str, userinfo_url: str, scope: str, *, pkce: bool,
               emails_url: str | None = None) -> Callable[[], ProviderConfig]:
    """A known provider's endpoints: the default its settings start from (the client id and secret
    come from the environment)."""
    return lambda: ProviderConfig(authorize_url=authorize_url, token_url=token_url, userinfo_url=userinfo_url,
                                  emails_url=emails_url, scope=scope, pkce=pkce)


_DEFAULTS = {
    "github": _endpoints("https://github.com/login/oauth/authorize", "https://github.com/login/oauth/access_token",
                         "https://api.github.com/user", "read:user user:email", pkce=True,
                         emails_url="https://api.github.com/user/emails"),
    # Gitee documents no PKCE support: state only.
    "gitee": _endpoints("https://gitee.com/oauth/authorize", "https://gitee.com/oauth/token",
                        "https://gitee.com/api/v5/user", "user_info emails", pkce=False),
    "google": _endpoints("https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token",
                         "https://openidconnect.googleapis.com/v1/userinfo", "openid email profile", pkce=True),
}


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="WEMCP_AUTH_", extra="ignore", populate_by_name=True, env_nested_delimiter="__"
    )

    service_name: str = "auth"
    port: int = Field(default=8001, ge=0, le=65535)

    # Where browsers reach the platform (the gateway); OAuth redirect URIs are built from it.
    public_url: str = "http://127.0.0.1:8000"
    # After a browser login: redirect here (refresh token in an HttpOnly cookie). Unset: JSON.
    post_login_redirect: str | None = None

    jwt_issuer: str = "wemcp"
    jwt_audience: str = "wemcp"
    access_ttl_seconds: int = Field(default=600, ge=30, le=86400)
    refresh_ttl_seconds: int = Field(default=30 * 86400, ge=300)
    # Signing keys are reloaded from the database this often (another process may have rotated).
    signing_key_reload_seconds: float = Field(default=30.0, gt=0)

    # Key-encryption keys for the vault: "kid:base64(32 bytes),kid2:..."; the active one wraps new
    # data keys, the others only unwrap (rotation: add a new one, make it active, run
    # `wemcp-auth-admin rotate-kek`, then drop the old one).
    keks: str | None = None
    active_kek: str | None = None
    # Development only: without `keks`, a KEK is generated once into this file.
    dev_kek_file: str = ".wemcp/auth-dev-kek"

    oauth_state_ttl_seconds: int = Field(default=600, ge=30)
    invite_default_ttl_hours: int = Field(default=168, ge=1)
    connection_refresh_margin_seconds: int = Field(default=300, ge=0)
    connection_refresh_interval_seconds: float = Field(default=60.0, gt=0)

    # Failed sign-ins (bad state, bad code, bad refresh token, bad invite) per client address.
    login_failures_allowed: int = Field(default=10, ge=1)
    login_failure_window_seconds: int = Field(default=300, ge=1)

    github: ProviderConfig = Field(default_factory=_DEFAULTS["github"])
    gitee: ProviderConfig = Field(default_factory=_DEFAULTS["gitee"])
    google: ProviderConfig = Field(default_factory=_DEFAULTS["google"])

    @field_validator("github", "gitee", "google", mode="before")
    @classmethod
    def _over_the_defaults(cls, v: Any, info: Any) -> Any:
        # WEMCP_AUTH_GITHUB__CLIENT_ID & co. arrive as a partial dict: lay them over the provider's
        # endpoints instead of replacing them (which failed start-up: "authorize_url: Field required")
        if isinstance(v, dict):
            return {**_DEFAULTS[info.field_name]().model_dump(), **v}
        return v

    @model_validator(mode="after")
    def _production_needs_keks(self) -> Settings:
        # Without KEKs a development key is generated into a local file: in production that would
        # protect every vault value with a key nobody chose, backs up or rotates.
        if self.environment == "production" and not self.keks:
            raise ValueError("WEMCP_AUTH_KEKS must be set when WEMCP_ENV=production "
                             "(generate one with `wemcp-auth-admin generate-kek`)")
        return self

    def provider(self, name: str) -> ProviderConfig | None:
        return getattr(self, name) if name in ("github", "gitee", "google") else None


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
