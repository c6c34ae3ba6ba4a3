"""Third-party OAuth connections: hand out a current access token, refreshing it before it
expires (on read, and in a background loop so idle connections stay fresh)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from wemcp.auth import oauth, repository, service
from wemcp.auth.models import OAuthApp, OAuthConnection
from wemcp.auth.tokens import now
from wemcp.common.errors import Conflict, NotFound
from wemcp.common.logging import get_logger

if TYPE_CHECKING:
    from wemcp.auth.deps import AuthState

log = get_logger("wemcp.auth.connections")


async def _refresh_locked(st: AuthState, conn: OAuthConnection, app: OAuthApp, force: bool) -> dict[str, Any]:
    """With the connection row locked: the token, refreshed when it expires within the margin."""
    ctx = service.connection_context(conn.user_id, app.id)
    token = json.loads(st.keyring.open(conn.token_sealed, ctx))
    margin = timedelta(seconds=st.settings.connection_refresh_margin_seconds)
    due = conn.expires_at is not None and conn.expires_at - margin <= now()
    if not (due or force) or not token.get("refresh_token"):
        return token
    secret = st.keyring.open(app.client_secret_sealed, service.app_secret_context(app.id)).decode()
    try:
        new = await oauth.refresh(app, secret, token, egress=st.settings.egress)
    except Exception as exc:
        conn.refresh_failed_at = now()
        log.warning(
            "connection_refresh_failed", app=app.slug, user_id=str(conn.user_id), error=type(exc).__name__
        )
        return token
    conn.token_sealed = st.keyring.seal(json.dumps(new).encode(), ctx)
    conn.expires_at, conn.scope = service.token_expiry(new), new.get("scope", conn.scope)
    conn.updated_at, conn.refresh_failed_at = now(), None
    log.info("connection_refreshed", app=app.slug, user_id=str(conn.user_id))
    return new


async def current_token(
    st: AuthState, user_id: uuid.UUID, server: str
) -> tuple[dict[str, Any], OAuthConnection]:
    """The user's token for calling ``server``: from a connection to an app that lists that server
    (never by slug alone: a server named like an app must not receive the app's tokens)."""
    async with st.sessions() as s, s.begin():
        row = await repository.connection_for_server(s, user_id, server)
        if row is None:
            raise NotFound(f"the user has no connection for {server}")
        conn, app = row
        token = await _refresh_locked(st, conn, app, force=False)
        if conn.expires_at is not None and conn.expires_at <= now():
            raise Conflict(f"the {app.slug} connection expired and could not be refreshed; reconnect it")
        return token, conn


async def refresh_due(st: AuthState) -> int:
    """Refresh every connection that expires within the margin; returns how many were tried."""
    horizon = now() + timedelta(seconds=st.settings.connection_refresh_margin_seconds)
    retry_after = now() - timedelta(minutes=10)
    async with st.sessions() as s:
        ids = await repository.connections_expiring(s, horizon, retry_after, 500)
    for conn_id in ids:
        async with st.sessions() as s, s.begin():
            row = await repository.connection_unless_locked(s, conn_id)
            if row is not None:
                await _refresh_locked(st, row[0], row[1], force=False)
    return len(ids)


async def refresher(st: AuthState) -> None:
    while True:
        try:
            await refresh_due(st)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("connection_refresher_failed", error=str(exc)[:200])
        await asyncio.sleep(st.settings.connection_refresh_interval_seconds)
