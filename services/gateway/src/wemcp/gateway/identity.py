"""Who is calling: the gateway verifies credentials once, locally, with no database and no
cross-service call once its caches are warm.

- **JWT access tokens** (``Authorization: Bearer eyJ...``): EdDSA only, verified against the auth
  service's JWKS, cached; an unknown ``kid`` triggers one refetch (rate-limited, so random kids
  cannot turn the gateway into a JWKS flood). Issuer, audience, ``exp``/``nbf`` are checked.
  Verified tokens are memoised until they expire, so a repeated token costs a dict lookup.
- **Platform API keys** (``Authorization: Bearer wmk_...``, ``X-API-Key`` or ``?key=``): the SHA-256
  of the key is looked up in a warm cache (hash -> identity and scope) filled from auth's internal
  resolve endpoint. Auth's ``user.api_key_revoked`` / ``user.role_changed`` events (core NATS
  subscription on ``user.>``) evict entries at once; entries also expire after a TTL, and the whole
  cache is dropped when the NATS connection reconnects (events may have been missed meanwhile).
- ``user.session_revoked`` (logout, refresh-token reuse) puts the session id on a deny list until
  its access tokens would have expired.

No credentials: anonymous (``None``). Credentials that do not verify: 401 problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx2 as httpx
import jwt
from jwt.algorithms import OKPAlgorithm
from starlette.requests import Request

from wemcp.common.errors import ServiceUnavailable, Unauthorized
from wemcp.common.identity import ROLE_RANK, Identity
from wemcp.common.logging import get_logger
from wemcp.common.trust import Issuer

log = get_logger("wemcp.gateway.identity")
ALGORITHMS = ["EdDSA"]
API_KEY_PREFIX = "wmk_"
_NEGATIVE_TTL = 5.0


@dataclass(frozen=True)
class ApiKeyGrant:
    """What a verified platform API key allows; the MCP router reads it from
    ``request.state.api_key`` (``servers is None``: every server)."""

    key_id: str
    servers: tuple[str, ...] | None

    def allows(self, server: str) -> bool:
        return self.servers is None or server in self.servers


class _Lru(OrderedDict[str, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def _marked(marks: dict[str, float], key: str, now: float) -> bool:
    """Whether ``key`` holds a mark (``marks``: key -> until, epoch seconds) at ``now``; a mark past its
    time is dropped."""
    until = marks.get(key)
    if until is None:
        return False
    if until < now:
        marks.pop(key, None)
        return False
    return True


def _invalid(detail: str = "invalid credentials") -> Unauthorized:
    return Unauthorized(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class Verifier:
    def __init__(
        self,
        client: httpx.AsyncClient,
        auth_url: str,
        *,
        issuer: str,
        audience: str,
        signer: Issuer,
        jwks_refresh_seconds: float = 300.0,
        jwks_min_refetch_seconds: float = 5.0,
        api_key_ttl_seconds: float = 300.0,
        cache_size: int = 50_000,
        leeway: float = 30.0,
    ) -> None:
        self.client = client
        self.signer = signer  # the gateway's service credential for auth's internal routes
        self.auth_url = auth_url.rstrip("/")
        self.issuer, self.audience, self.leeway = issuer, audience, leeway
        self.jwks_refresh_seconds = jwks_refresh_seconds
        self.jwks_min_refetch_seconds = jwks_min_refetch_seconds
        self.api_key_ttl = api_key_ttl_seconds
        self._keys: dict[str, Any] = {}
        self._jwks_at = 0.0
        self._jwks_lock = asyncio.Lock()
        self._tokens = _Lru(cache_size)  # token -> (Identity, exp, sid)
        self._api_keys = _Lru(cache_size)  # sha256 -> (Identity | None, ApiKeyGrant | None, until)
        self._key_ids: dict[str, str] = {}  # key id -> sha256
        self._revoked_sessions: dict[str, float] = {}  # sid -> until (epoch seconds)
        self._banned_users: dict[str, float] = {}  # user id -> until (epoch seconds): user.banned/deleted
        self._banned_keys: dict[str, set[str]] = {}  # user id -> digests whose refusal an unban drops
        # user id -> (millisecond of the change, until): access tokens minted before a role change carry
        # the old role, so they are refused and the client refreshes into a token with the new one
        self._role_changed: dict[str, tuple[int, float]] = {}
        self._nats: Any = None
        self._reconnects = 0
        self._sub: Any = None

    # -- wiring ---------------------------------------------------------------------------------
    async def subscribe(self, nc: Any) -> None:
        """Listen to ``user.>`` on core NATS (JetStream publishes reach core subscribers too)."""
        self._nats = nc
        self._reconnects = nc.stats.get("reconnects", 0)
        self._sub = await nc.subscribe("user.>", cb=self._on_message)

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the connection may already be closed
                await self._sub.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        try:
            self.on_event(msg.subject, json.loads(msg.data))
        except Exception as exc:
            log.warning("identity_event_ignored", subject=msg.subject, error=type(exc).__name__)

    def on_event(self, subject: str, data: dict[str, Any]) -> None:
        if subject == "user.api_key_revoked":
            digest = self._key_ids.pop(str(data.get("key_id")), None)
            if digest is not None:
                self._api_keys.pop(digest, None)
        elif subject == "user.role_changed":
            user_id = str(data.get("user_id"))
            self._forget_user_keys(user_id)
            changed = time.time()
            if data.get("occurred_at"):  # auth's clock, the one that stamps the tokens' iat
                from datetime import datetime

                changed = datetime.fromisoformat(str(data["occurred_at"])).timestamp()
            self._role_changed[user_id] = (int(changed * 1000), time.time() + 86400.0)
            for token, (ident, _, _) in list(self._tokens.items()):
                if str(ident.user_id) == user_id:
                    self._tokens.pop(token, None)
        elif subject in ("user.banned", "user.deleted"):
            user_id = str(data.get("user_id"))
            # the next use asks auth, which refuses a banned/deleted user (and that refusal is cached)
            dropped = self._forget_user_keys(user_id)
            if subject == "user.banned" and data.get("banned") is False:
                self._banned_users.pop(user_id, None)
                for digest in self._banned_keys.pop(user_id, ()):  # their cached refusals, too
                    self._api_keys.pop(digest, None)
            else:
                self._banned_keys.setdefault(user_id, set()).update(dropped)
                until = time.time() + 86400.0
                if data.get("until"):
                    from datetime import datetime

                    until = datetime.fromisoformat(str(data["until"])).timestamp() + self.leeway
                self._banned_users[user_id] = until
                for token, (ident, _, _) in list(self._tokens.items()):
                    if str(ident.user_id) == user_id:
                        self._tokens.pop(token, None)
        elif subject == "user.session_revoked":
            sid = str(data.get("session_id"))
            until = time.time() + 3600.0
            if data.get("expires_at"):
                from datetime import datetime

                until = datetime.fromisoformat(str(data["expires_at"])).timestamp() + self.leeway
            self._revoked_sessions[sid] = until
            for token, (_, _, token_sid) in list(self._tokens.items()):
                if token_sid == sid:
                    self._tokens.pop(token, None)

    def _forget_user_keys(self, user_id: str) -> set[str]:
        dropped = set()
        for digest, (ident, _, _) in list(self._api_keys.items()):
            if ident is not None and str(ident.user_id) == user_id:
                self._api_keys.pop(digest, None)
                dropped.add(digest)
        return dropped

    def _user_banned(self, user_id: str, now: float) -> bool:
        """A banned (or deleted) user's access tokens are refused until every token minted before the
        ban has expired (auth mints none while the ban holds)."""
        return _marked(self._banned_users, user_id, now)

    def _role_stale(self, user_id: str, minted_ms: int, now: float) -> bool:
        """A token minted before the user's role last changed (auth's ``iat_ms`` against the event's
        ``occurred_at``, both auth's clock) names the old role."""
        hit = self._role_changed.get(user_id)
        if hit is None:
            return False
        if hit[1] < now:
            self._role_changed.pop(user_id, None)
            return False
        return minted_ms < hit[0]

    def _check_reconnects(self) -> None:
        if self._nats is None:
            return
        n = self._nats.stats.get("reconnects", 0)
        if n != self._reconnects:  # events may have been missed while disconnected
            self._reconnects = n
            self._api_keys.clear()
            self._key_ids.clear()

    # -- the verifier -----------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Identity | None:
        token = _credential(request)
        if token is None:
            return None
        if token.startswith(API_KEY_PREFIX):
            ident, grant = await self.verify_api_key(token)
            request.state.api_key = grant
            return ident
        return await self.verify_jwt(token)

    async def verify_jwt(self, token: str) -> Identity:
        now = time.time()
        hit = self._tokens.get(token)
        if hit is not None:
            ident, exp, sid = hit
            if exp > now - self.leeway and not self._session_revoked(sid, now) and not (
                    self._banned_users and self._user_banned(str(ident.user_id), now)):
                return ident
            self._tokens.pop(token, None)
            raise _invalid("the token expired or was revoked")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("malformed token") from None
        if header.get("alg") not in ALGORITHMS:  # never "none", never HS* with a public key
            raise _invalid("unsupported token algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise _invalid("the token names no key")
        key = await self._key(kid)
        if key is None:
            raise _invalid("the token was signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
            ident = Identity(
                user_id=UUID(claims["sub"]),
                role=claims.get("role", "user"),
                login=str(claims.get("login", ""))[:100],
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("the token expired") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _invalid("invalid token") from None
        if ident.role not in ROLE_RANK:
            raise _invalid("invalid token")
        sid = claims.get("sid")
        if self._session_revoked(sid, now):
            raise _invalid("the session was signed out")
        if self._banned_users and self._user_banned(str(ident.user_id), now):
            raise _invalid("the account is banned or deleted")
        minted_ms = claims.get("iat_ms")
        if not isinstance(minted_ms, int):
            minted_ms = int(claims["iat"]) * 1000
        if self._role_changed and self._role_stale(str(ident.user_id), minted_ms, now):
            raise _invalid("the account's role changed: refresh the token")
        self._tokens.put(token, (ident, float(claims["exp"]), sid))
        return ident

    def _session_revoked(self, sid: str | None, now: float) -> bool:
        if sid is None or not self._revoked_sessions:
            return False
        return _marked(self._revoked_sessions, sid, now)

    async def _key(self, kid: str) -> Any:
        key = self._keys.get(kid)
        stale = time.monotonic() - self._jwks_at > self.jwks_refresh_seconds
        if key is not None and not stale:
            return key
        async with self._jwks_lock:
            key = self._keys.get(kid)
            since = time.monotonic() - self._jwks_at
            if (key is None and since > self.jwks_min_refetch_seconds) or since > self.jwks_refresh_seconds:
                await self.refresh_jwks()
        return self._keys.get(kid)

    async def refresh_jwks(self) -> None:
        try:
            r = await self.client.get(f"{self.auth_url}/internal/auth/jwks", timeout=5.0,
                                      headers=self.signer.headers("auth"))
            r.raise_for_status()
            keys: dict[str, Any] = {}
            for jwk in r.json().get("keys", []):
                if (
                    jwk.get("kty") == "OKP"
                    and jwk.get("crv") == "Ed25519"
                    and isinstance(jwk.get("kid"), str)
                ):
                    keys[jwk["kid"]] = OKPAlgorithm.from_jwk(jwk)
            self._keys = keys
            self._jwks_at = time.monotonic()
        except Exception as exc:
            log.warning("jwks_fetch_failed", error=str(exc)[:200])
            # auth may still be starting: allow another try a second from now
            self._jwks_at = time.monotonic() - max(self.jwks_min_refetch_seconds - 1.0, 0.0)

    async def verify_api_key(self, key: str) -> tuple[Identity, ApiKeyGrant]:
        if len(key) > 200:
            raise _invalid("malformed API key")
        self._check_reconnects()
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = time.monotonic()
        hit = self._api_keys.get(digest)
        if hit is None or hit[2] < now:
            hit = await self._resolve(digest, now)
        ident, grant, _ = hit
        if ident is None or grant is None:
            raise _invalid("unknown or revoked API key")
        return ident, grant

    async def _resolve(self, digest: str, now: float) -> tuple[Identity | None, ApiKeyGrant | None, float]:
        try:
            r = await self.client.post(
                f"{self.auth_url}/internal/auth/api-keys/resolve", json={"key_hash": digest}, timeout=5.0,
                headers=self.signer.headers("auth"),
            )
        except httpx.HTTPError:
            raise ServiceUnavailable("cannot verify the API key right now") from None
        if r.status_code == 404:
            entry: tuple[Identity | None, ApiKeyGrant | None, float] = (None, None, now + _NEGATIVE_TTL)
        elif r.status_code == 200:
            d = r.json()
            ident = Identity(user_id=UUID(d["user_id"]), role=d["role"], login=d.get("login", ""))
            servers = d.get("servers")
            grant = ApiKeyGrant(d["key_id"], None if servers is None else tuple(servers))
            entry = (ident, grant, now + self.api_key_ttl)
            self._key_ids[grant.key_id] = digest
        else:
            raise ServiceUnavailable("cannot verify the API key right now")
        self._api_keys.put(digest, entry)
        return entry


def _credential(request: Request) -> str | None:
    """The credential a request carries, if any; a malformed Authorization header is a 401."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise _invalid("use Authorization: Bearer <token or API key>")
        return value
    key = request.headers.get("x-api-key")
    if key is None and request.scope.get("path", "").startswith("/mcp/"):
        # ``?key=`` is for MCP clients that cannot set headers. Anywhere else a credential in a link
        # would let whoever sends the link act as its owner in the clicker's browser (login CSRF).
        key = request.query_params.get("key")
    if key is not None:
        if not key.startswith(API_KEY_PREFIX):
            raise _invalid("not a platform API key")
        return key
    return None
