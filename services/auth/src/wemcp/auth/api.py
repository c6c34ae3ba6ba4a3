"""The auth service's HTTP API: the public part (under ``/api/v1``, reached through the gateway)
and the internal part (``/internal/auth``, reachable only from the platform's network; the gateway
never routes it)."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from wemcp.auth import oauth, service
from wemcp.auth.deps import AuthState, Session, State, state
from wemcp.auth.models import User
from wemcp.auth.schemas import (
    SERVER_SLUG,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    AuthorizationUrl,
    ConnectionList,
    ConnectionToken,
    IdentitiesRead,
    InviteAccept,
    InviteCreate,
    InviteCreated,
    InviteList,
    InvitePreview,
    Jwks,
    LogoutIn,
    MeRead,
    MeUpdate,
    OAuthAppCreate,
    OAuthAppList,
    OAuthAppRead,
    ProvidersRead,
    RefreshIn,
    ResolvedKey,
    ResolveIn,
    RoleUpdate,
    SecretList,
    SecretPut,
    SecretRead,
    UserRead,
    VaultValues,
)
from wemcp.auth.tokens import RefreshReused, family_of, revoke_family, rotate, start_session
from wemcp.common.errors import BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized, Unprocessable
from wemcp.common.identity import AdminUser, CurrentUser, OptionalUser
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import EgressRefused

PROVIDERS = ("github", "gitee", "google")
REFRESH_COOKIE = "wemcp_refresh"
_SERVER_RE = re.compile(SERVER_SLUG)
log = get_logger("wemcp.auth.api")
router = APIRouter(prefix="/api/v1", tags=["auth"])
internal = APIRouter(prefix="/internal/auth", tags=["internal"], include_in_schema=False)




# -- failed sign-in throttling -------------------------------------------------------------------


def _client_ip(request: Request) -> str:
    # The gateway appends the address it saw as the last X-Forwarded-For entry.
    fwd = request.headers.get("x-forwarded-for")
    if fwd:
        return fwd.split(",")[-1].strip()[:64]
    return request.client.host if request.client else "unknown"


async def _throttle(st: AuthState, request: Request) -> None:
    key = f"auth:login_fail:{_client_ip(request)}"
    count = await st.redis.get(key)
    if count is not None and int(count) >= st.settings.login_failures_allowed:
        ttl = await st.redis.ttl(key)
        raise TooManyRequests(
            "too many failed sign-in attempts; try again later",
            headers={"Retry-After": str(max(int(ttl), 1))},
        )


async def _failed(st: AuthState, request: Request) -> None:
    key = f"auth:login_fail:{_client_ip(request)}"
    # (EXPIRE NX needs Redis 7; the embedded server is older) the first failure opens the window
    if await st.redis.incr(key) == 1:
        await st.redis.expire(key, st.settings.login_failure_window_seconds)


async def _guarded(request: Request, step: Any, st: AuthState | None = None) -> Any:
    """Run a sign-in step; a client error counts as a failed attempt."""
    st = st or state(request)
    await _throttle(st, request)
    try:
        return await step()
    except (BadRequest, Unauthorized, NotFound, Forbidden):
        await _failed(st, request)
        raise


# -- keys and sign-in ----------------------------------------------------------------------------


@router.get("/auth/jwks", summary="Public keys of access tokens (JWKS)")
@router.get("/jwks", include_in_schema=False)
async def jwks(st: State) -> JSONResponse:
    return JSONResponse(await st.keys.published(), headers={"Cache-Control": "public, max-age=300"})


@router.get("/auth/providers", summary="Sign-in providers that are configured", response_model=ProvidersRead)
async def providers(st: State) -> dict[str, Any]:
    s = st.settings
    return {"providers": [p for p in PROVIDERS if s.provider(p).enabled]}


async def _public_endpoint(st: AuthState, field: str, url: str) -> None:
    """An endpoint the auth service will POST codes and client secrets to must be public (the egress
    policy; checked again at connect time). A name that does not resolve from here is left to
    that check: it may resolve where the service runs."""
    try:
        await st.settings.egress.check(url)
    except EgressRefused as exc:
        raise Unprocessable(f"{field}: {exc}", extra={"errors": [
            {"field": field, "in": "body", "message": str(exc), "type": "egress_refused"}]}) from None
    except ValueError as exc:
        raise Unprocessable(f"{field}: {exc}") from None
    except OSError:
        pass


def _provider(st: AuthState, name: str) -> Any:
    cfg = st.settings.provider(name)
    if cfg is None:
        raise NotFound(f"no sign-in provider {name!r}")
    if not cfg.enabled:
        raise NotFound(f"sign-in with {name} is not configured")
    return cfg


def _callback_url(st: AuthState, provider: str) -> str:
    return f"{st.settings.public_url.rstrip('/')}/api/v1/auth/{provider}/callback"


def _bind_browser(st: AuthState, resp: Response, browser: str) -> None:
    """The cookie that ties an OAuth flow to the browser that started it (see ``oauth``). Lax: the
    provider sends the browser back with a top-level GET, which must carry it."""
    _http_only_cookie(st, resp, oauth.BROWSER_COOKIE, browser, max_age=st.settings.oauth_state_ttl_seconds,
                      samesite="lax", path="/api/v1")


def _unbind_browser(st: AuthState, resp: Response) -> None:
    resp.delete_cookie(
        oauth.BROWSER_COOKIE,
        path="/api/v1",
        httponly=True,
        secure=st.settings.public_url.startswith("https"),
        samesite="lax",
    )


async def _sign_in_flow(st: AuthState, provider: str, *, link_user: str | None, invite: str | None) -> tuple[str, str]:
    """A sign-in (or link) with ``provider`` begun: its authorization URL and the browser binding."""
    cfg = _provider(st, provider)
    return await oauth.begin(st.redis, cfg, cfg.client_secret, _callback_url(st, provider),
                             st.settings.oauth_state_ttl_seconds, kind="login", provider=provider,
                             link_user=link_user, invite=invite)


class ProviderReturn:
    """The query a provider sends the browser back to a callback with: the code and the flow's state,
    or the error."""

    def __init__(self, code: str | None = None, state: str | None = None,
                 error: str | None = Query(default=None, max_length=200)) -> None:
        self.code, self.state, self.error = code, state, error


async def _take_flow(st: AuthState, request: Request, back: ProviderReturn, other: str,
                     **expected: str) -> dict[str, Any]:
    """The flow this browser began, taken by its state (once); refused when it is not the one
    ``expected`` (``other``: what to call the flow it is) or when the provider refused."""
    flow = await oauth.take_state(st.redis, back.state, request.cookies.get(oauth.BROWSER_COOKIE))
    if any(flow.get(k) != v for k, v in expected.items()):
        raise BadRequest(f"the state belongs to another {other}")
    if back.error:
        raise BadRequest(f"the provider refused: {back.error}")
    return flow


@router.get("/auth/{provider}/login", summary="Start signing in (redirects to the provider)")
async def login(
    provider: str,
    st: State,
    invite: str | None = Query(default=None, max_length=100),
) -> RedirectResponse:
    """Always a sign-in, never a link: whoever is calling is not asked (a link someone else made,
    with their credential in it, must not attach the clicker's provider account to theirs).
    Linking is ``POST /auth/{provider}/link``, with the signed-in user's token."""
    url, browser = await _sign_in_flow(st, provider, link_user=None, invite=invite)
    resp = RedirectResponse(url, status_code=302)
    _bind_browser(st, resp, browser)
    return resp


@router.post("/auth/{provider}/link", summary="Link another provider account to the signed-in user",
             response_model=AuthorizationUrl)
async def link(provider: str, st: State, response: Response, user: CurrentUser) -> dict[str, str]:
    """The authorization URL, for this browser only (the response sets the flow's cookie)."""
    url, browser = await _sign_in_flow(st, provider, link_user=str(user.user_id), invite=None)
    _bind_browser(st, response, browser)
    return {"authorization_url": url}


@router.get("/auth/{provider}/callback", summary="The provider sends the browser back here")
async def callback(provider: str, request: Request, st: State,
                   back: Annotated[ProviderReturn, Depends()]) -> Response:
    cfg = _provider(st, provider)

    async def run() -> tuple[User, bool, Any]:
        flow = await _take_flow(st, request, back, "sign-in", kind="login", provider=provider)
        token = await oauth.exchange(
            cfg, cfg.client_secret, _callback_url(st, provider), back.code, flow.get("verifier"),
            egress=st.settings.egress
        )
        profile = await oauth.fetch_profile(provider, cfg, token, egress=st.settings.egress)
        link_user = uuid.UUID(flow["link_user"]) if flow.get("link_user") else None
        async with st.sessions() as s, s.begin():
            user, created = await service.sign_in(s, profile, link_user)
            if flow.get("invite"):
                user = await service.accept_invite(s, user.id, flow["invite"])
            pair = await start_session(s, st.keys, user)
        return user, created, pair

    user, created, pair = await _guarded(request, run, st)
    log.info("signed_in", provider=provider, user_id=str(user.id), created=created)
    if st.settings.post_login_redirect:
        resp: Response = RedirectResponse(st.settings.post_login_redirect, status_code=303)
    else:
        resp = JSONResponse({**pair.body(), "user": service.user_read(user), "created": created})
    _set_refresh_cookie(st, resp, pair.refresh_token)
    _unbind_browser(st, resp)
    return resp


def _set_refresh_cookie(st: AuthState, resp: Response, value: str) -> None:
    _http_only_cookie(st, resp, REFRESH_COOKIE, value, max_age=st.settings.refresh_ttl_seconds,
                      samesite="strict", path="/api/v1/auth")


def _http_only_cookie(st: AuthState, resp: Response, name: str, value: str, *, max_age: int,
                      samesite: Literal["lax", "strict"], path: str) -> None:
    """A cookie scripts cannot read, Secure whenever the platform is served over https."""
    resp.set_cookie(name, value, max_age=max_age, httponly=True, secure=st.settings.public_url.startswith("https"),
                    samesite=samesite, path=path)


@router.post("/auth/refresh", summary="Exchange a refresh token for a new token pair (rotates it)")
async def refresh(request: Request, st: State, body: RefreshIn | None = None) -> JSONResponse:
    raw = (body.refresh_token if body else None) or request.cookies.get(REFRESH_COOKIE)

    async def run() -> Any:
        if not raw:
            raise Unauthorized("no refresh token")
        try:
            async with st.sessions() as s, s.begin():
                return await rotate(s, st.keys, raw)
        except RefreshReused as reuse:
            async with st.sessions() as s, s.begin():
                await revoke_family(s, st.settings, reuse.family, reuse.user_id, "reuse")
            log.warning("refresh_token_reuse", user_id=str(reuse.user_id), session_id=str(reuse.family))
            raise Unauthorized(
                "refresh token reuse detected; the session was revoked, sign in again"
            ) from None

    pair = await _guarded(request, run, st)
    resp = JSONResponse(pair.body())
    _set_refresh_cookie(st, resp, pair.refresh_token)
    return resp


@router.post("/auth/logout", status_code=204, summary="Revoke this session (or every session)")
async def logout(request: Request, st: State, s: Session, user: OptionalUser,
                 body: LogoutIn | None = None) -> Response:
    raw = (body.refresh_token if body else None) or request.cookies.get(REFRESH_COOKIE)
    async with s.begin():
        if body is not None and body.all:
            if user is None:
                raise Unauthorized("sign in first")
            await service.logout_everywhere(s, st.settings, user.user_id)
        elif raw:
            found = await family_of(s, raw)
            if found is None:
                raise Unauthorized("unknown refresh token")
            await revoke_family(s, st.settings, found[0], found[1], "logout")
        else:
            raise BadRequest("give the refresh token (body or cookie), or all=true")
    resp = Response(status_code=204)
    resp.delete_cookie(REFRESH_COOKIE, path="/api/v1/auth")
    return resp


# -- me, users, roles ----------------------------------------------------------------------------


@router.get("/me", summary="The signed-in user", response_model=MeRead)
async def get_me(s: Session, user: CurrentUser) -> dict[str, Any]:
    return await service.me(s, user.user_id)


@router.patch("/me", summary="Change one's display name", response_model=MeRead)
async def patch_me(s: Session, user: CurrentUser, body: MeUpdate) -> dict[str, Any]:
    async with s.begin():
        await service.rename_me(s, user.user_id, body.name)
    return await service.me(s, user.user_id)


@router.get("/users/{user_id}", summary="A user (admins)", response_model=MeRead)
async def get_user(user_id: uuid.UUID, s: Session, admin: AdminUser) -> dict[str, Any]:
    return await service.me(s, user_id)


@router.put("/users/{user_id}/role", summary="Set a user's role (admins; never one's own)", response_model=UserRead)
async def put_role(
    user_id: uuid.UUID, body: RoleUpdate, s: Session, actor: CurrentUser
) -> dict[str, Any]:
    async with s.begin():
        user = await service.set_role(s, actor.user_id, user_id, body.role, body.reason)
        return service.user_read(user)


# -- invites -------------------------------------------------------------------------------------


@router.post("/invites", status_code=201, summary="Invite someone with a role (merchants, admins)",
             response_model=InviteCreated)
async def create_invite(body: InviteCreate, st: State, s: Session, actor: CurrentUser) -> dict[str, Any]:
    async with s.begin():
        invite, code = await service.create_invite(
            s,
            actor.user_id,
            body.role,
            body.email,
            body.expires_in_hours or st.settings.invite_default_ttl_hours,
            body.max_uses,
        )
    # The code is shown once; only its hash is stored. E-mail delivery is the caller's (no mailer yet).
    return {
        "id": str(invite.id),
        "code": code,
        "role": invite.role,
        "email": invite.email,
        # the code in the fragment: browsers never send it, so no server or proxy logs it
        "url": f"{st.settings.public_url.rstrip('/')}/invite#code={code}",
        "expires_at": invite.expires_at.isoformat(),
        "max_uses": invite.max_uses,
    }


@router.get("/invites", summary="Invites I created", response_model=InviteList)
async def list_invites(s: Session, actor: CurrentUser) -> dict[str, Any]:
    items = await service.my_invites(s, actor.user_id)
    return {"items": items, "total": len(items), "page": 1, "page_size": len(items)}


@router.post("/invites/lookup", summary="What an invite grants, before accepting it (uses nothing)",
             response_model=InvitePreview)
async def lookup_invite(body: InviteAccept, request: Request, st: State, s: Session,
                        user: CurrentUser) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        return await service.invite_preview(s, body.code)

    return await _guarded(request, run, st)


@router.post("/invites/accept", summary="Accept an invite (grants its role)", response_model=UserRead)
async def accept_invite(body: InviteAccept, request: Request, st: State, user: CurrentUser) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with st.sessions() as s, s.begin():
            return service.user_read(await service.accept_invite(s, user.user_id, body.code))

    return await _guarded(request, run, st)


# -- platform API keys ---------------------------------------------------------------------------


@router.post("/api-keys", status_code=201, summary="Create a platform API key (shown once)",
             response_model=ApiKeyCreated)
async def create_api_key(body: ApiKeyCreate, s: Session, user: CurrentUser) -> dict[str, Any]:
    servers = None if body.servers is None else sorted(set(body.servers))
    for slug in servers or ():
        if not _SERVER_RE.match(slug):
            raise BadRequest(f"not a server slug: {slug[:100]!r}")
    async with s.begin():
        key, raw = await service.create_api_key(s, user.user_id, body.name, servers, body.expires_at)
        return {**service.api_key_read(key), "key": raw}


@router.get("/api-keys", summary="My platform API keys (never the keys themselves)", response_model=ApiKeyList)
async def list_api_keys(s: Session, user: CurrentUser) -> dict[str, Any]:
    items = await service.my_api_keys(s, user.user_id)
    return {"items": items, "total": len(items), "page": 1, "page_size": len(items)}


@router.delete("/api-keys/{key_id}", status_code=204, summary="Revoke a platform API key")
async def revoke_api_key(key_id: uuid.UUID, s: Session, user: CurrentUser) -> Response:
    async with s.begin():
        await service.revoke_api_key(s, user.user_id, key_id)
    return Response(status_code=204)


# -- the vault -----------------------------------------------------------------------------------


# The vault, at two addresses: `/vault` holds my own upstream secrets; `/vault/system` the system
# keys (the platform's built-in upstream key of a server, used when a caller brings none and metered
# by ratelimit), owned by the system principal and managed by admins. Same envelope encryption;
# write-only, masked on read.


async def _my_vault(user: CurrentUser) -> uuid.UUID:
    return user.user_id


async def _system_vault(st: State, admin: AdminUser) -> uuid.UUID:
    async with st.sessions() as s:
        await service.require_admin(s, admin.user_id)  # the role as the database knows it now
    return service.SYSTEM_USER


def _caller(request: Request) -> uuid.UUID:
    from wemcp.common.identity import identity_of

    ident = identity_of(request)
    if ident is None:
        raise Unauthorized("sign in first")
    return ident.user_id


def _vault_routes(path: str, owner_of: Any, whose: str) -> None:
    @router.put(path, summary=f"Save {whose} upstream secret for a server (write-only)", response_model=SecretRead)
    async def put_secret(body: SecretPut, request: Request, st: State, s: Session,
                         owner: uuid.UUID = Depends(owner_of)) -> dict[str, Any]:
        async with s.begin():
            row = await service.put_secret(s, st.keyring, owner, body.server, body.name, body.value)
            if owner == service.SYSTEM_USER:  # an admin's act: audited (never the value, only its mask)
                await service.record(s, await service.require_admin(s, _caller(request)), "system_key.put",
                                     "system_key", f"{body.server}/{body.name}", after={"value": row.masked})
        log.info("vault_secret_saved", system=owner == service.SYSTEM_USER, server=body.server, name=body.name)
        return service.secret_read(row)

    @router.get(path, summary=f"{whose.capitalize()} saved secrets, masked", response_model=SecretList)
    async def list_secrets(s: Session, owner: uuid.UUID = Depends(owner_of),
                           server: str | None = Query(default=None, pattern=SERVER_SLUG)) -> dict[str, Any]:
        items = await service.list_secrets(s, owner, server)
        return {"items": items, "total": len(items), "page": 1, "page_size": len(items)}

    @router.delete(path, status_code=204, summary=f"Delete {whose} secret")
    async def delete_secret(request: Request, s: Session, owner: uuid.UUID = Depends(owner_of),
                            server: str = Query(pattern=SERVER_SLUG), name: str = Query(max_length=128)) -> Response:
        async with s.begin():
            await service.delete_secret(s, owner, server, name)
            if owner == service.SYSTEM_USER:
                await service.record(s, await service.require_admin(s, _caller(request)), "system_key.delete",
                                     "system_key", f"{server}/{name}")
        log.info("vault_secret_deleted", system=owner == service.SYSTEM_USER, server=server, name=name)
        return Response(status_code=204)


_vault_routes("/vault", _my_vault, "my")
_vault_routes("/vault/system", _system_vault, "the system's (admins)")


# -- third-party OAuth apps and connections ------------------------------------------------------


@router.post("/oauth/apps", status_code=201, summary="Configure a third-party OAuth 2.0 provider (admins)",
             response_model=OAuthAppRead)
async def create_app(body: OAuthAppCreate, st: State, s: Session, admin: AdminUser) -> dict[str, Any]:
    await _public_endpoint(st, "token_url", str(body.token_url))
    fields = {
        "slug": body.slug,
        "name": body.name,
        "authorize_url": str(body.authorize_url),
        "token_url": str(body.token_url),
        "client_id": body.client_id,
        "scope": body.scope,
        "pkce": body.pkce,
        "token_endpoint_auth_method": body.token_endpoint_auth_method,
        "servers": body.servers,
    }
    async with s.begin():
        return await service.create_app(s, st.keyring, admin.user_id, fields, body.client_secret)


@router.delete("/oauth/apps/{slug}", status_code=204,
               summary="Remove a third-party OAuth provider and its users' connections (admins)")
async def delete_app(slug: str, s: Session, admin: AdminUser) -> Response:
    async with s.begin():
        await service.delete_app(s, admin.user_id, slug)
    return Response(status_code=204)


@router.get("/oauth/apps", summary="Configured third-party OAuth providers", response_model=OAuthAppList)
async def list_apps(s: Session, user: CurrentUser) -> dict[str, Any]:
    items = await service.list_apps(s)
    return {"items": items, "total": len(items), "page": 1, "page_size": len(items)}


def _connect_callback(st: AuthState, slug: str) -> str:
    return f"{st.settings.public_url.rstrip('/')}/api/v1/connections/{slug}/callback"


@router.post("/connections/{slug}/start", summary="Start connecting a third-party account",
             response_model=AuthorizationUrl)
async def connect_start(slug: str, st: State, response: Response, user: CurrentUser) -> dict[str, str]:
    """The authorization URL, for this browser only (the response sets the flow's cookie: a URL
    handed to someone else would put their third-party token into this user's account)."""
    async with st.sessions() as s:
        app = await service.app_by_slug(s, slug)
    secret = st.keyring.open(app.client_secret_sealed, service.app_secret_context(app.id)).decode()
    url, browser = await oauth.begin(
        st.redis,
        app,
        secret,
        _connect_callback(st, slug),
        st.settings.oauth_state_ttl_seconds,
        kind="connect",
        app=slug,
        user=str(user.user_id),
    )
    _bind_browser(st, response, browser)
    return {"authorization_url": url}


@router.get("/connections/{slug}/callback", summary="The third party sends the browser back here")
async def connect_callback(slug: str, request: Request, st: State,
                           back: Annotated[ProviderReturn, Depends()]) -> Response:

    async def run() -> dict[str, Any]:
        flow = await _take_flow(st, request, back, "flow", kind="connect", app=slug)
        async with st.sessions() as s:
            app = await service.app_by_slug(s, slug)
        secret = st.keyring.open(app.client_secret_sealed, service.app_secret_context(app.id)).decode()
        token = await oauth.exchange(app, secret, _connect_callback(st, slug), back.code, flow.get("verifier"),
                                     egress=st.settings.egress)
        async with st.sessions() as s, s.begin():
            row = await service.save_connection(s, st.keyring, uuid.UUID(flow["user"]), app, token)
            return service.connection_read(app, row)

    body = await _guarded(request, run, st)
    resp: Response
    if st.settings.post_login_redirect:
        resp = RedirectResponse(f"{st.settings.post_login_redirect}?{urlencode({'connected': slug})}", 303)
    else:
        resp = JSONResponse(body)
    _unbind_browser(st, resp)
    return resp


@router.get("/connections", summary="My connected third-party accounts (never the tokens)",
            response_model=ConnectionList)
async def list_connections(s: Session, user: CurrentUser) -> dict[str, Any]:
    items = await service.my_connections(s, user.user_id)
    return {"items": items, "total": len(items), "page": 1, "page_size": len(items)}


@router.delete("/connections/{slug}", status_code=204, summary="Disconnect a third-party account")
async def delete_connection(slug: str, s: Session, user: CurrentUser) -> Response:
    async with s.begin():
        await service.disconnect(s, user.user_id, slug)
    return Response(status_code=204)


# -- internal API (gateway only) -----------------------------------------------------------------


@internal.get("/jwks", response_model=Jwks)
async def internal_jwks(st: State) -> dict[str, Any]:
    return await st.keys.published()


@internal.post("/api-keys/resolve", response_model=ResolvedKey)
async def resolve(body: ResolveIn, s: Session) -> dict[str, Any]:
    found = await service.resolve_api_key(s, body.key_hash)
    if found is None:
        raise NotFound("no such key")
    return found


@internal.get("/vault/{user_id}", response_model=VaultValues)
async def internal_vault(
    user_id: uuid.UUID, st: State, s: Session, server: str = Query(pattern=SERVER_SLUG)
) -> dict[str, Any]:
    values = await service.read_secrets(s, st.keyring, user_id, server)
    return {"user_id": str(user_id), "server": server, "values": values}


@internal.get("/connections/{user_id}/{server}", response_model=ConnectionToken)
async def internal_connection(user_id: uuid.UUID, server: str, st: State) -> dict[str, Any]:
    """The user's token for a call to ``server`` (a server slug, not an app's)."""
    from wemcp.auth.connections import current_token

    token, row = await current_token(st, user_id, server)
    return {
        "access_token": token["access_token"],
        "token_type": token.get("token_type", "Bearer"),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
    }


@internal.get("/users/{user_id}/identities", response_model=IdentitiesRead)
async def internal_identities(user_id: uuid.UUID, s: Session) -> dict[str, Any]:
    """The provider accounts linked to a user (provider, the provider's stable id ``subject`` and
    its login as of the last sign-in): the catalog checks ``io.github.<login>/`` names against the
    GitHub ones. Never a token, never an e-mail address."""
    return await service.identities(s, user_id)
