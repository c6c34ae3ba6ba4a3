"""HTTP shapes of the auth API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

Role = Literal["user", "merchant", "admin", "superadmin"]
SERVER_SLUG = r"^[A-Za-z0-9][A-Za-z0-9._/@:-]{0,199}$"
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"  # noqa: S105


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RefreshIn(_In):
    refresh_token: str | None = Field(default=None, max_length=200)


class LogoutIn(_In):
    refresh_token: str | None = Field(default=None, max_length=200)
    all: bool = False


class MeUpdate(_In):
    name: str | None = Field(default=None, max_length=200)


class RoleUpdate(_In):
    role: Role
    reason: str | None = Field(default=None, max_length=2000)


class BanIn(_In):
    reason: str = Field(min_length=3, max_length=2000)


class ReasonIn(_In):
    reason: str | None = Field(default=None, max_length=2000)


class InviteCreate(_In):
    role: Role = "user"
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    expires_in_hours: int | None = Field(default=None, ge=1, le=24 * 90)
    max_uses: int = Field(default=1, ge=1, le=10_000, description="how many accounts may accept it")


class InviteAccept(_In):
    code: str = Field(min_length=8, max_length=100)


class ApiKeyCreate(_In):
    name: str = Field(min_length=1, max_length=100)
    # None: every server; otherwise only these server slugs.
    servers: list[str] | None = Field(default=None, max_length=200)
    expires_at: datetime | None = None


class SecretPut(_In):
    server: str = Field(pattern=SERVER_SLUG)
    name: str = Field(pattern=SECRET_NAME)
    value: str = Field(min_length=1, max_length=8192)


class OAuthAppCreate(_In):
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")
    name: str = Field(min_length=1, max_length=200)
    authorize_url: HttpUrl
    token_url: HttpUrl
    client_id: str = Field(min_length=1, max_length=300)
    client_secret: str = Field(min_length=1, max_length=2000)
    scope: str = Field(default="", max_length=2000)
    pkce: bool = True
    token_endpoint_auth_method: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"  # noqa: S105
    # the servers its users' tokens go to (and no other): at least one
    servers: list[Annotated[str, Field(pattern=SERVER_SLUG)]] = Field(min_length=1, max_length=200)


class ResolveIn(_In):
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
