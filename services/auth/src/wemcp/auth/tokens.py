"""Access tokens (EdDSA JWTs), the published JWKS, signing-key rotation, rotating refresh tokens.

Access tokens are short-lived and verified locally by the gateway against the JWKS; refresh
tokens are opaque, stored hashed, and rotate on every use. A refresh token presented a second time
means it was stolen (or the client is broken): the whole family (the login session) is revoked.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.auth import repository
from wemcp.auth.config import Settings
from wemcp.auth.models import RefreshToken, SigningKey, User, bus_tables
from wemcp.common.errors import Unauthorized
from wemcp.common.events.users import SessionRevoked
from wemcp.common.logging import get_logger
from wemcp.common.outbox import add_event
from wemcp.common.sealing import Keyring

log = get_logger("wemcp.auth.tokens")
ALG = "EdDSA"


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def now() -> datetime:
    return datetime.now(UTC)


def _public_jwk(kid: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = jwt.utils.base64url_encode(raw).decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALG, "use": "sig"}


@dataclass
class _Active:
    kid: str
    key: Ed25519PrivateKey


class SigningKeys:
    """The active signing key and the published set, reloaded from the database periodically so
    that a rotation done by another process (or the admin command) is picked up."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], keyring: Keyring, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.keyring = keyring
        self.settings = settings
        self.active: _Active | None = None
        self.jwks: dict[str, Any] = {"keys": []}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Create the first key if there is none (serialised across processes)."""
        async with self.sessions() as s, s.begin():
            await repository.lock_signing_keys(s)
            if not await repository.active_signing_key_exists(s):
                await create_signing_key(s, self.keyring)
        await self.load()

    async def load(self) -> None:
        grace = timedelta(seconds=self.settings.access_ttl_seconds + 120)
        async with self.sessions() as s:
            rows = await repository.signing_keys(s)
        published, active = [], None
        for row in rows:
            if row.retired_at is None and active is None:
                pem = self.keyring.open(row.private_sealed, f"signing-key:{row.kid}")
                key = serialization.load_pem_private_key(pem, password=None)
                assert isinstance(key, Ed25519PrivateKey)
                active = _Active(row.kid, key)
            if row.retired_at is None or row.retired_at + grace > now():
                published.append(row.public_jwk)
        if active is None:
            raise RuntimeError("no active signing key; run ensure() first")
        self.active, self.jwks, self._loaded_at = active, {"keys": published}, time.monotonic()

    async def current(self) -> _Active:
        if (
            self.active is None
            or time.monotonic() - self._loaded_at > self.settings.signing_key_reload_seconds
        ):
            async with self._lock:
                if (
                    self.active is None
                    or time.monotonic() - self._loaded_at > self.settings.signing_key_reload_seconds
                ):
                    await self.load()
        assert self.active is not None
        return self.active

    async def published(self) -> dict[str, Any]:
        await self.current()
        return self.jwks

    async def issue_access(self, user: User, session_id: uuid.UUID) -> tuple[str, int]:
        active = await self.current()
        now = time.time()
        iat = int(now)
        ttl = self.settings.access_ttl_seconds
        claims = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": str(user.id),
            "role": user.role,
            "login": user.login,
            "sid": str(session_id),
            "iat": iat,
            # to the millisecond: the gateway refuses tokens minted before the user's role last changed
            "iat_ms": int(now * 1000),
            "nbf": iat,
            "exp": iat + ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, active.key, algorithm=ALG, headers={"kid": active.kid, "typ": "at+jwt"})
        return token, ttl


async def create_signing_key(session: AsyncSession, keyring: Keyring) -> str:
    """A new active key; the previous active key is retired (still published for a grace period)."""
    key = Ed25519PrivateKey.generate()
    kid = f"k{int(time.time())}-{secrets.token_hex(4)}"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    await repository.retire_signing_keys(session, now())
    await repository.add(
        session,
        SigningKey(
            kid=kid,
            alg=ALG,
            private_sealed=keyring.seal(pem, f"signing-key:{kid}"),
            public_jwk=_public_jwk(kid, key),
        ),
    )
    log.info("signing_key_created", kid=kid)
    return kid


# -- refresh tokens ------------------------------------------------------------------------------


@dataclass
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: uuid.UUID

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


def _new_refresh(session: AsyncSession, user_id: uuid.UUID, family: uuid.UUID, ttl: int) -> str:
    raw = "wmr_" + secrets.token_urlsafe(32)
    repository.stage(
        session,
        RefreshToken(
            token_hash=sha256(raw),
            family_id=family,
            user_id=user_id,
            expires_at=now() + timedelta(seconds=ttl),
        )
    )
    return raw


async def start_session(session: AsyncSession, keys: SigningKeys, user: User) -> TokenPair:
    family = uuid.uuid4()
    raw = _new_refresh(session, user.id, family, keys.settings.refresh_ttl_seconds)
    access, ttl = await keys.issue_access(user, family)
    return TokenPair(access, raw, ttl, family)


class RefreshReused(Exception):
    def __init__(self, family: uuid.UUID, user_id: uuid.UUID) -> None:
        self.family, self.user_id = family, user_id


async def rotate(session: AsyncSession, keys: SigningKeys, raw: str) -> TokenPair:
    """Exchange a refresh token for a new pair. Raises :class:`RefreshReused` (the caller revokes
    the family in its own committed transaction) or Unauthorized."""
    row = await repository.refresh_token_for_update(session, sha256(raw))
    if row is None:
        raise Unauthorized("unknown refresh token")
    if row.used_at is not None or row.revoked_at is not None:
        raise RefreshReused(row.family_id, row.user_id)
    if row.expires_at <= now():
        raise Unauthorized("the refresh token expired; sign in again")
    user = await repository.user(session, row.user_id)
    if user is None or user.disabled:
        raise Unauthorized("the account is disabled")
    row.used_at = now()
    new_raw = _new_refresh(session, user.id, row.family_id, keys.settings.refresh_ttl_seconds)
    access, ttl = await keys.issue_access(user, row.family_id)
    return TokenPair(access, new_raw, ttl, row.family_id)


async def revoke_family(
    session: AsyncSession, settings: Settings, family: uuid.UUID, user_id: uuid.UUID, reason: str
) -> int:
    revoked = await repository.revoke_refresh_family(session, family, now())
    # Access tokens of this session stay valid until they expire; the gateway refuses them earlier.
    await add_event(
        session,
        bus_tables,
        SessionRevoked(
            user_id=user_id,
            session_id=family,
            reason=reason,
            expires_at=now() + timedelta(seconds=settings.access_ttl_seconds),
        ),
    )
    return revoked


async def family_of(session: AsyncSession, raw: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    return await repository.refresh_family_of(session, sha256(raw))
