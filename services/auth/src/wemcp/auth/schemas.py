"""HTTP shapes of the auth API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

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


# -- responses -----------------------------------------------------------------------------------
# Times are ISO 8601 strings and ids strings, as the use cases shape them. ``extra="forbid"``: a key
# the use case returns but the model does not list fails loudly instead of vanishing.


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProvidersRead(_Out):
    providers: list[str]


class AuthorizationUrl(_Out):
    authorization_url: str


class Jwks(_Out):
    keys: list[dict[str, Any]]


class UserRead(_Out):
    id: str
    login: str
    name: str | None
    email: str | None
    avatar_url: str | None
    role: str
    created_at: str


class IdentityRead(_Out):
    provider: str
    login: str | None
    email: str | None
    linked_at: str


class MeRead(UserRead):
    identities: list[IdentityRead]


class InviteCreated(_Out):
    id: str
    code: str
    role: str
    email: str | None
    url: str
    expires_at: str
    max_uses: int


class InviteRead(_Out):
    id: str
    role: str
    email: str | None
    expires_at: str
    used_at: str | None
    max_uses: int
    uses: int
    revoked_at: str | None


class InvitePreview(_Out):
    role: str
    expires_at: str


class ApiKeyRead(_Out):
    id: str
    name: str
    prefix: str
    servers: list[str] | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class ApiKeyCreated(ApiKeyRead):
    key: str


class SecretRead(_Out):
    server: str
    name: str
    value: str
    updated_at: str


class OAuthAppRead(_Out):
    id: str
    slug: str
    name: str
    authorize_url: str
    token_url: str
    client_id: str
    scope: str | None
    pkce: bool
    token_endpoint_auth_method: str
    servers: list[str]
    client_secret: str


class ConnectionRead(_Out):
    app: str
    name: str
    servers: list[str]
    scope: str | None
    expires_at: str | None
    connected_at: str
    needs_reconnect: bool


class _List(_Out):
    total: int
    page: int
    page_size: int


class InviteList(_List):
    items: list[InviteRead]


class ApiKeyList(_List):
    items: list[ApiKeyRead]


class SecretList(_List):
    items: list[SecretRead]


class OAuthAppList(_List):
    items: list[OAuthAppRead]


class ConnectionList(_List):
    items: list[ConnectionRead]


# internal API


class ResolvedKey(_Out):
    key_id: str
    user_id: str
    role: str
    login: str
    servers: list[str] | None
    expires_at: str | None


class VaultValues(_Out):
    user_id: str
    server: str
    values: dict[str, str]


class ConnectionToken(_Out):
    access_token: str
    token_type: str
    expires_at: str | None


class LinkedIdentity(_Out):
    provider: str
    subject: str
    login: str | None


class IdentitiesRead(_Out):
    user_id: str
    login: str
    disabled: bool
    identities: list[LinkedIdentity]


# the admin system


class AdminUserRead(UserRead):
    banned: bool
    banned_at: str | None
    ban_reason: str | None
    deleted: bool


class AdminUserDetail(AdminUserRead):
    identities: list[IdentityRead]


class AdminUserList(_Out):
    items: list[AdminUserRead]
    total: int
    next_cursor: str | None


class AccountDeleted(_Out):
    id: str
    deleted: bool
    removed: dict[str, int]


class AuditEntryRead(_Out):
    seq: int
    event_id: str
    service: str
    action: str
    actor_id: str | None
    actor_role: str | None
    target_type: str
    target_id: str
    before: Any
    after: Any
    reason: str | None
    occurred_at: str
    recorded_at: str


class AuditList(_Out):
    items: list[AuditEntryRead]
    next_cursor: str | None


class AdminInviteRead(_Out):
    id: str
    role: str
    email: str | None
    created_by: str
    created_at: str
    expires_at: str
    max_uses: int
    uses: int
    state: str
    used_at: str | None
    revoked_at: str | None


class AdminInviteList(_Out):
    items: list[AdminInviteRead]
    next_cursor: str | None
