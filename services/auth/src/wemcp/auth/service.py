"""Use cases of the auth service: sign-in, roles and invites, API keys, the vault, connections.
HTTP shapes live in api.py; this module decides and writes (state change + event in one
transaction)."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.auth import repository
from wemcp.auth.config import Settings
from wemcp.auth.models import (
    ApiKey,
    Invite,
    OAuthApp,
    OAuthConnection,
    User,
    UserIdentity,
    VaultSecret,
    bus_tables,
)
from wemcp.auth.oauth import Profile
from wemcp.auth.tokens import now, revoke_family, sha256
from wemcp.common.errors import Conflict, Forbidden, NotFound
from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.events.users import ApiKeyRevoked, SecretChanged, UserRegistered, UserRoleChanged
from wemcp.common.identity import ROLE_RANK
from wemcp.common.outbox import add_event
from wemcp.common.sealing import Keyring, mask

AVATAR_FALLBACK = "https://api.dicebear.com/7.x/bottts/svg?seed={}"
API_KEY_PREFIX = "wmk_"


def fallback_avatar(user_id: uuid.UUID) -> str:
    return AVATAR_FALLBACK.format(user_id)


# -- users and sign-in ---------------------------------------------------------------------------


async def _free_login(session: AsyncSession, wanted: str, provider: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", wanted).strip("-.")[:60] or "user"
    for candidate in (base, f"{base}-{provider}", *(f"{base}-{secrets.token_hex(3)}" for _ in range(5))):
        if not await repository.login_taken(session, candidate):
            return candidate
    raise Conflict("could not find a free login name")


async def create_user(
    session: AsyncSession,
    *,
    login: str,
    name: str | None = None,
    email: str | None = None,
    avatar_url: str | None = None,
    role: str = "user",
    provider: str | None = None,
) -> User:
    user_id = uuid.uuid4()
    user = User(
        id=user_id,
        login=await _free_login(session, login, provider or "local"),
        name=name,
        email=email,
        avatar_url=avatar_url or fallback_avatar(user_id),
        role=role,
    )
    await repository.add(session, user)
    registered = UserRegistered(user_id=user.id, login=user.login, role=role, provider=provider)
    await add_event(session, bus_tables, registered)
    return user


async def sign_in(
    session: AsyncSession, profile: Profile, link_user_id: uuid.UUID | None
) -> tuple[User, bool]:
    """The user behind a provider profile: found by the linked identity, linked to the signed-in
    user, or created. Returns (user, created)."""
    ident = await repository.identity(session, profile.provider, profile.subject)
    if ident is not None:
        if link_user_id is not None and ident.user_id != link_user_id:
            raise Conflict(f"this {profile.provider} account is already linked to another user")
        user = await repository.user(session, ident.user_id)
        assert user is not None
        _profile_into(ident, profile)
        if user.disabled:
            raise Forbidden("the account is disabled")
        return user, False
    created = False
    if link_user_id is not None:
        user = await repository.user(session, link_user_id)
        if user is None:
            raise NotFound("the account to link to no longer exists")
    else:
        user = await create_user(
            session,
            login=profile.login or f"{profile.provider}-{profile.subject}",
            name=profile.name,
            email=profile.email,
            avatar_url=profile.avatar_url,
            provider=profile.provider,
        )
        created = True
    ident = UserIdentity(user_id=user.id, provider=profile.provider, subject=profile.subject)
    repository.stage(session, _profile_into(ident, profile))
    await session.flush()
    return user, created


def _profile_into(ident: UserIdentity, profile: Profile) -> UserIdentity:
    """The identity with what the provider said of the account at this sign-in."""
    ident.login, ident.email, ident.profile = profile.login, profile.email, _safe_profile(profile.raw)
    return ident


def _safe_profile(raw: dict[str, Any]) -> dict[str, Any]:
    keep = ("login", "id", "sub", "avatar_url", "picture", "name", "email", "html_url", "company", "blog")
    return {k: raw[k] for k in keep if k in raw and isinstance(raw[k], str | int | None)}


async def me(session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any]:
    user = await repository.user(session, user_id)
    if user is None:
        raise NotFound("no such user")
    idents = await repository.identities_of(session, user_id)
    return {
        **user_read(user),
        "identities": [
            {
                "provider": i.provider,
                "login": i.login,
                "email": i.email,
                "linked_at": i.created_at.isoformat(),
            }
            for i in idents
        ],
    }


def _fields(row: Any, *names: str) -> dict[str, Any]:
    """The named attributes of a row as the API answers them: ids as text, times in ISO 8601 (an
    unset time stays None)."""
    return {name: _json_value(getattr(row, name)) for name in names}


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def user_read(user: User) -> dict[str, Any]:
    return _fields(user, "id", "login", "name", "email", "avatar_url", "role", "created_at")


async def _actor(session: AsyncSession, user_id: uuid.UUID) -> User:
    """The actor as the database knows them now (a token's role claim may be minutes old)."""
    user = await repository.user(session, user_id)
    if user is None or user.disabled:
        raise Forbidden("the account is disabled or gone")
    return user


async def record(session: AsyncSession, actor: User | None, action: str, target_type: str, target_id: str, *,
                 before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                 reason: str | None = None) -> None:
    """Stage ``admin.action_recorded`` with the change (the audit log's input; auth stores it too)."""
    await add_event(session, bus_tables, AdminActionRecorded(
        service="auth", action=action, actor_id=actor.id if actor else None, actor_role=actor.role if actor else None,
        target_type=target_type, target_id=target_id, before=before, after=after, reason=reason))


# -- roles and invites ---------------------------------------------------------------------------


def _can_grant(actor_role: str, role: str) -> bool:
    # Nobody hands out more than they hold; only a superadmin makes another superadmin.
    return (
        ROLE_RANK[role] <= ROLE_RANK[actor_role]
        if actor_role == "superadmin"
        else (ROLE_RANK[role] <= ROLE_RANK[actor_role] and role != "superadmin")
    )


async def require_admin(session: AsyncSession, actor_id: uuid.UUID) -> User:
    """The actor is an admin as the database knows them now (not as a token minted earlier says)."""
    actor = await _actor(session, actor_id)
    if ROLE_RANK[actor.role] < ROLE_RANK["admin"]:
        raise Forbidden("this needs the admin role")
    return actor


async def set_role(session: AsyncSession, actor_id: uuid.UUID, target_id: uuid.UUID, role: str,
                   reason: str | None = None) -> User:
    if actor_id == target_id:
        raise Forbidden("nobody changes their own role")
    actor = await _actor(session, actor_id)
    if ROLE_RANK[actor.role] < ROLE_RANK["admin"]:
        raise Forbidden("this needs the admin role")
    target = await repository.user_for_update(session, target_id)
    if target is None:
        raise NotFound("no such user")
    if actor.role != "superadmin" and (
        ROLE_RANK[target.role] >= ROLE_RANK[actor.role] or ROLE_RANK[role] >= ROLE_RANK[actor.role]
    ):
        raise Forbidden("you can only change roles below your own")
    if target.deleted_at is not None:
        raise NotFound("no such user")
    if target.role != role:
        previous = await _change_role(session, target, role, actor.id)
        await record(session, actor, "user.role_change", "user", str(target.id),
                     before={"role": previous}, after={"role": role}, reason=reason)
    return target


async def _change_role(session: AsyncSession, user: User, role: str, actor_id: uuid.UUID) -> str:
    """Give ``user`` ``role`` and tell the other services (``user.role_changed``); the previous role."""
    previous, user.role, user.updated_at = user.role, role, now()
    changed = UserRoleChanged(user_id=user.id, role=role, previous_role=previous, actor_id=actor_id)
    await add_event(session, bus_tables, changed)
    return previous


async def create_invite(
    session: AsyncSession, actor_id: uuid.UUID, role: str, email: str | None, ttl_hours: int, max_uses: int = 1
) -> tuple[Invite, str]:
    """An invite code for ``role``, valid ``ttl_hours`` and for ``max_uses`` accounts. Nobody mints a
    role above their own (and only a superadmin mints a superadmin); merchants invite merchants and
    users. An admin's (or superadmin's) invite is an admin action: it is audited."""
    actor = await _actor(session, actor_id)
    if ROLE_RANK[actor.role] < ROLE_RANK["merchant"]:
        raise Forbidden("only merchants and admins invite")
    if not _can_grant(actor.role, role):
        raise Forbidden(f"a {actor.role} cannot invite a {role}")
    code = "wmi_" + secrets.token_urlsafe(24)
    invite = Invite(
        code_hash=sha256(code),
        role=role,
        email=email,
        created_by=actor.id,
        expires_at=now() + timedelta(hours=ttl_hours),
        max_uses=max_uses,
        uses=0,
    )
    await repository.add(session, invite)
    if ROLE_RANK[actor.role] >= ROLE_RANK["admin"]:
        await record(session, actor, "invite.create", "invite", str(invite.id),
                     after={"role": role, "max_uses": max_uses, "expires_at": invite.expires_at.isoformat(),
                            "email": email})
    return invite, code


async def invite_preview(session: AsyncSession, code: str) -> dict[str, Any]:
    """The role a valid invite grants and when it expires (never who made it or for whom); the
    same 404 as accepting for an unknown, used-up, revoked or expired code."""
    invite = await repository.open_invite(session, sha256(code), now())
    if invite is None:
        raise NotFound("the invite is unknown, used up, revoked or expired")
    return {"role": invite.role, "expires_at": invite.expires_at.isoformat()}


async def accept_invite(session: AsyncSession, user_id: uuid.UUID, code: str) -> User:
    """``max_uses`` accounts at most, atomically: accepts of one code race on one conditional UPDATE
    (``uses < max_uses``), so the last use is taken once. ``used_at``/``used_by`` name the last use."""
    row = await repository.use_invite(session, sha256(code), user_id, now())
    if row is None:
        raise NotFound("the invite is unknown, used up, revoked or expired")
    role, inviter = row
    user = await repository.user_for_update(session, user_id)
    assert user is not None  # the caller's own row
    if ROLE_RANK[role] > ROLE_RANK[user.role]:  # an invite never lowers a role
        await _change_role(session, user, role, inviter)
    return user


# -- platform API keys ---------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession,
    user_id: uuid.UUID,
    name: str,
    servers: list[str] | None,
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    await _actor(session, user_id)
    raw = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        user_id=user_id,
        name=name,
        prefix=raw[:12],
        key_hash=sha256(raw),
        servers=servers,
        expires_at=expires_at,
    )
    await repository.add(session, key)
    return key, raw


async def revoke_api_key(session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> None:
    key = await repository.api_key_for_update(session, user_id, key_id)
    if key is None:
        raise NotFound("no such API key")
    if key.revoked_at is None:
        key.revoked_at = now()
        await add_event(session, bus_tables, ApiKeyRevoked(key_id=key.id, user_id=user_id, prefix=key.prefix))


def api_key_read(key: ApiKey) -> dict[str, Any]:
    return _fields(key, "id", "name", "prefix", "servers", "created_at", "expires_at", "revoked_at")


async def resolve_api_key(session: AsyncSession, key_hash: str) -> dict[str, Any] | None:
    row = await repository.live_api_key(session, key_hash)
    if row is None:
        return None
    key, user = row
    if user.disabled or (key.expires_at is not None and key.expires_at <= now()):
        return None
    return {
        "key_id": str(key.id),
        "user_id": str(user.id),
        "role": user.role,
        "login": user.login,
        "servers": key.servers,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }


# -- the vault -----------------------------------------------------------------------------------


def _vault_context(user_id: uuid.UUID, server: str, name: str) -> str:
    return f"vault:{user_id}:{server}:{name}"


SYSTEM_USER = uuid.UUID(int=0)  # the principal owning admins' system keys (the gateway reads it)


async def _system_principal(session: AsyncSession) -> None:
    """The row that owns system keys: disabled, so it can never sign in, hold an API key or act."""
    await repository.ensure_user(session, id=SYSTEM_USER, login="wemcp-system", name="WeMcp system keys",
                                 avatar_url="", role="user", disabled=True)


async def _secret_row(session: AsyncSession, user_id: uuid.UUID, server: str, name: str) -> VaultSecret | None:
    return await repository.secret_for_update(session, user_id, server, name)


async def put_secret(
    session: AsyncSession, keyring: Keyring, user_id: uuid.UUID, server: str, name: str, value: str
) -> VaultSecret:
    """Save a user's own secret for a server, or (``user_id=SYSTEM_USER``, admins only — the caller
    checks) a system key. The gateway is told by ``user.secret_changed`` (no value in it)."""
    if user_id == SYSTEM_USER:
        await _system_principal(session)
    else:
        await _actor(session, user_id)
    sealed = keyring.seal(value.encode(), _vault_context(user_id, server, name))
    row = await _secret_row(session, user_id, server, name)
    if row is None:
        row = VaultSecret(user_id=user_id, server=server, name=name, sealed=sealed, masked=mask(value))
        repository.stage(session, row)
    else:
        row.sealed, row.masked, row.updated_at = sealed, mask(value), now()
    await session.flush()
    await add_event(session, bus_tables, SecretChanged(user_id=user_id, server=server, name=name))
    return row


async def delete_secret(session: AsyncSession, user_id: uuid.UUID, server: str, name: str) -> None:
    row = await _secret_row(session, user_id, server, name)
    if row is None:
        raise NotFound("no such secret")
    await repository.remove(session, row)
    await add_event(session, bus_tables, SecretChanged(user_id=user_id, server=server, name=name, action="deleted"))


async def list_secrets(session: AsyncSession, user_id: uuid.UUID, server: str | None) -> list[dict[str, Any]]:
    return [secret_read(r) for r in await repository.secrets_of(session, user_id, server or None)]


def secret_read(row: VaultSecret) -> dict[str, Any]:
    return {
        "server": row.server,
        "name": row.name,
        "value": row.masked,
        "updated_at": row.updated_at.isoformat(),
    }


async def read_secrets(
    session: AsyncSession, keyring: Keyring, user_id: uuid.UUID, server: str
) -> dict[str, str]:
    rows = await repository.secrets_of(session, user_id, server, ordered=False)
    return {r.name: keyring.open(r.sealed, _vault_context(user_id, server, r.name)).decode() for r in rows}


# -- third-party OAuth apps and connections ------------------------------------------------------


def app_secret_context(app_id: uuid.UUID) -> str:
    return f"oauth-app:{app_id}"


def connection_context(user_id: uuid.UUID, app_id: uuid.UUID) -> str:
    return f"connection:{user_id}:{app_id}"


def app_read(app: OAuthApp) -> dict[str, Any]:
    fields = ("id", "slug", "name", "authorize_url", "token_url", "client_id", "scope", "pkce",
              "token_endpoint_auth_method", "servers")
    return {**_fields(app, *fields), "client_secret": "****"}


async def app_by_slug(session: AsyncSession, slug: str) -> OAuthApp:
    app = await repository.oauth_app(session, slug)
    if app is None:
        raise NotFound(f"no OAuth app {slug!r}")
    return app


async def save_connection(
    session: AsyncSession, keyring: Keyring, user_id: uuid.UUID, app: OAuthApp, token: dict[str, Any]
) -> OAuthConnection:
    sealed = keyring.seal(json.dumps(token).encode(), connection_context(user_id, app.id))
    expires = token_expiry(token)
    row = await repository.connection(session, user_id, app.id, for_update=True)
    if row is None:
        row = OAuthConnection(
            user_id=user_id, app_id=app.id, token_sealed=sealed, scope=token.get("scope"), expires_at=expires
        )
        repository.stage(session, row)
    else:
        row.token_sealed, row.scope, row.expires_at = sealed, token.get("scope"), expires
        row.updated_at, row.refresh_failed_at = now(), None
    await session.flush()
    return row


def token_expiry(token: dict[str, Any]) -> datetime | None:
    if token.get("expires_at"):
        return datetime.fromtimestamp(float(token["expires_at"]), tz=now().tzinfo)
    if token.get("expires_in"):
        return now() + timedelta(seconds=float(token["expires_in"]))
    return None


# -- what the HTTP handlers call (the SQL is the repository's) ------------------------------------


async def logout_everywhere(session: AsyncSession, settings: Settings, user_id: uuid.UUID) -> None:
    """Revoke every open session of the user (each emits ``user.session_revoked``)."""
    for family in await repository.open_session_families(session, user_id):
        await revoke_family(session, settings, family, user_id, "logout")


async def rename_me(session: AsyncSession, user_id: uuid.UUID, name: str | None) -> None:
    user = await repository.user(session, user_id)
    if user is None:
        raise NotFound("no such user")
    if name is not None:
        user.name = name


def invite_read(i: Invite) -> dict[str, Any]:
    return _fields(i, "id", "role", "email", "expires_at", "used_at", "max_uses", "uses", "revoked_at")


async def my_invites(session: AsyncSession, user_id: uuid.UUID) -> list[dict[str, Any]]:
    return [invite_read(i) for i in await repository.invites_created_by(session, user_id, 200)]


async def my_api_keys(session: AsyncSession, user_id: uuid.UUID) -> list[dict[str, Any]]:
    return [api_key_read(k) for k in await repository.api_keys_of(session, user_id)]


async def create_app(session: AsyncSession, keyring: Keyring, admin_id: uuid.UUID, fields: dict[str, Any],
                     client_secret: str) -> dict[str, Any]:
    """Configure a third-party OAuth provider (the client secret sealed at rest); audited."""
    actor = await require_admin(session, admin_id)  # the role as the database knows it now
    if await repository.oauth_app_exists(session, fields["slug"]):
        raise Conflict(f"an OAuth app {fields['slug']!r} exists")
    app_id = uuid.uuid4()
    app = OAuthApp(id=app_id, **fields, created_by=admin_id,
                   client_secret_sealed=keyring.seal(client_secret.encode(), app_secret_context(app_id)))
    await repository.add(session, app)
    shown = app_read(app)
    await record(session, actor, "oauth_app.create", "oauth_app", app.slug,
                 after={k: v for k, v in shown.items() if k != "client_secret"})
    return shown


async def delete_app(session: AsyncSession, admin_id: uuid.UUID, slug: str) -> None:
    actor = await require_admin(session, admin_id)
    app = await app_by_slug(session, slug)
    before = {k: v for k, v in app_read(app).items() if k != "client_secret"}
    await repository.remove(session, app)  # its connections go with it (ON DELETE CASCADE)
    await record(session, actor, "oauth_app.delete", "oauth_app", slug, before=before)


async def list_apps(session: AsyncSession) -> list[dict[str, Any]]:
    return [app_read(a) for a in await repository.oauth_apps(session)]


def connection_read(app: OAuthApp, row: OAuthConnection) -> dict[str, Any]:
    return {
        "app": app.slug,
        "name": app.name,
        "servers": app.servers,
        "scope": row.scope,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "connected_at": row.created_at.isoformat(),
        "needs_reconnect": row.refresh_failed_at is not None,
    }


async def my_connections(session: AsyncSession, user_id: uuid.UUID) -> list[dict[str, Any]]:
    return [connection_read(app, conn) for conn, app in await repository.connections_of(session, user_id)]


async def disconnect(session: AsyncSession, user_id: uuid.UUID, slug: str) -> None:
    app = await app_by_slug(session, slug)
    row = await repository.connection(session, user_id, app.id)
    if row is None:
        raise NotFound("not connected")
    await repository.remove(session, row)


async def identities(session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any]:
    """The provider accounts linked to a user: never a token, never an e-mail address."""
    user = await repository.user(session, user_id)
    if user is None:
        raise NotFound("no such user")
    rows = await repository.identities_of(session, user_id)
    return {"user_id": str(user_id), "login": user.login, "disabled": user.disabled,
            "identities": [{"provider": r.provider, "subject": r.subject, "login": r.login} for r in rows]}
