"""The platform's one credential between its own processes: a short-lived signed assertion.

Every platform-to-platform hop (gateway → service, gateway → deployer bridge or cloud function,
deployer → catalog, a service's internal route) carries one header, ``X-WeMcp-Assertion``::

    v1.<kid>.<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, "v1.<kid>.<claims>"))>

Claims: ``iss`` (the issuing service), ``aud`` (the one receiver it is for: a service's name, or
``bridge:<slug>`` for one hosted server), ``iat``/``exp`` (unix seconds, at most
:data:`MAX_LIFETIME` apart) and, when a user is calling, ``sub``/``role``/``login`` (the identity the
gateway verified). The keys come from ``WEMCP_SERVICE_KEYS`` (``kid:secret,kid:secret``): the first
signs, every one verifies — rotation is "prepend a new key, roll out, drop the old one".

A hosted server's bridge (a cloud function runs strangers' code) never holds the ring: it gets keys
*derived* from it for its own slug (:meth:`KeyRing.derive`), which the gateway derives too; such a
key verifies (and could mint) assertions for that one slug and nothing else.

Costs: a fresh token takes some 20-30 µs to sign or verify (HMAC, base64, JSON); :class:`Issuer`
caches a token per (audience, identity) for :data:`REUSE_SECONDS` and :class:`Verifier` caches
verified tokens until they expire, so the hot path pays one dict lookup each side (< 1 µs).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from wemcp.common import identity
from wemcp.common.errors import Unauthorized
from wemcp.common.identity import IDENTITY_STATE, ROLE_RANK, USER_HEADERS, Identity

# the one header of the platform's credential; the gateway's upstream header filter lets exactly this
# one of the X-WeMcp-* names through, and only towards the deployer's bridges
HEADER_ASSERTION = identity.HEADER_ASSERTION
# the same, as the raw ASGI header name (bytes) the hot paths compare against
HEADER_ASSERTION_RAW = HEADER_ASSERTION.encode()
SETTING = "WEMCP_SERVICE_KEYS"
VERSION = "v1"
MAX_LIFETIME = 120  # seconds between iat and exp, enforced by every verifier
REUSE_SECONDS = 60  # an issuer hands out one token this long: it always has >= 60 s left
LEEWAY = 10  # tolerated clock difference between two hosts, in seconds
# Development only (no WEMCP_SERVICE_KEYS set, WEMCP_ENV=development): a known key, so one service
# started by hand still talks to another. Production refuses to start without the setting.
DEVELOPMENT_KEYS = "dev:wemcp-development-service-key-not-secret"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_VERIFIED_CACHE_MAX = 10_000


class InvalidAssertion(Unauthorized):
    """401: the assertion is missing, malformed, expired, for someone else or badly signed."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key_ring(kid: str = "k1") -> str:
    """A fresh ``kid:secret`` for ``WEMCP_SERVICE_KEYS`` (dev stacks, tests, ``make`` helpers)."""
    return f"{kid}:{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class KeyRing:
    """``(kid, key)`` pairs; the first signs, all verify."""

    keys: tuple[tuple[str, bytes], ...] = field(repr=False)  # secrets: never in a log line

    @classmethod
    def parse(cls, raw: str) -> KeyRing:
        """``kid:secret[,kid:secret...]`` (whitespace around entries ignored). Raises ValueError with
        a message fit for the one-line settings error."""
        keys: list[tuple[str, bytes]] = []
        for entry in raw.split(","):
            entry = entry.strip()
            if not entry:
                continue
            kid, sep, secret = entry.partition(":")
            if not sep or not _KID.match(kid):
                raise ValueError("each entry must be kid:secret with a kid of 1-32 letters, digits, - or _")
            if len(secret) < 16:
                raise ValueError(f"the secret of key {kid!r} is shorter than 16 characters")
            if any(k == kid for k, _ in keys):
                raise ValueError(f"key id {kid!r} appears twice")
            keys.append((kid, secret.encode()))
        if not keys:
            raise ValueError("no keys given (kid:secret,...)")
        return cls(tuple(keys))

    @property
    def signing_kid(self) -> str:
        return self.keys[0][0]

    def derive(self, purpose: str) -> KeyRing:
        """A ring of keys derived for one purpose (``bridge:<slug>``), same kids: a holder of the
        derived ring learns nothing about the platform keys nor any other purpose's keys."""
        return KeyRing(tuple((kid, hmac.new(key, b"wemcp-derive:" + purpose.encode(), hashlib.sha256).digest())
                             for kid, key in self.keys))

    def export(self) -> str:
        """``kid:hex,...``: how a derived ring is handed to a bridge (cloud function environment)."""
        return ",".join(f"{kid}:{key.hex()}" for kid, key in self.keys)

    @classmethod
    def from_export(cls, raw: str) -> KeyRing:
        return cls(tuple((kid, bytes.fromhex(hexkey)) for kid, _, hexkey in
                         (e.strip().partition(":") for e in raw.split(",") if e.strip())))

    # -- one token ---------------------------------------------------------------------------------
    def sign(self, claims: dict[str, Any]) -> str:
        kid, key = self.keys[0]
        head = f"{VERSION}.{kid}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
        return f"{head}.{_b64(hmac.new(key, head.encode(), hashlib.sha256).digest())}"

    def verify(self, token: str, audience: str, now: float | None = None) -> dict[str, Any]:
        """The claims of a valid token for ``audience``; :class:`InvalidAssertion` otherwise."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise InvalidAssertion("malformed service assertion")
        key = next((k for kid, k in self.keys if kid == parts[1]), None)
        if key is None:
            raise InvalidAssertion("service assertion signed with an unknown key")
        head = token[: token.rfind(".")]
        try:
            mac = _unb64(parts[3])
            claims = json.loads(_unb64(parts[2]))
        except (binascii.Error, ValueError):
            raise InvalidAssertion("malformed service assertion") from None
        if not hmac.compare_digest(mac, hmac.new(key, head.encode(), hashlib.sha256).digest()):
            raise InvalidAssertion("bad service assertion signature")
        if not isinstance(claims, dict):
            raise InvalidAssertion("malformed service assertion")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or not 0 < exp - iat <= MAX_LIFETIME:
            raise InvalidAssertion("service assertion lifetime out of bounds")
        now = time.time() if now is None else now
        if iat > now + LEEWAY:
            raise InvalidAssertion("service assertion issued in the future (clock skew?)")
        if exp + LEEWAY <= now:
            raise InvalidAssertion("service assertion expired")
        if claims.get("aud") != audience:
            raise InvalidAssertion("service assertion is for another receiver")
        if not isinstance(claims.get("iss"), str):
            raise InvalidAssertion("malformed service assertion")
        return claims


def bridge_audience(slug: str) -> str:
    return f"bridge:{slug}"


def claims_identity(claims: dict[str, Any]) -> Identity | None:
    """The user an assertion speaks for (None: the platform itself is calling)."""
    sub = claims.get("sub")
    if sub is None:
        return None
    role = claims.get("role", "user")
    try:
        user_id = UUID(str(sub))
    except ValueError:
        raise InvalidAssertion("malformed identity in service assertion") from None
    if not isinstance(role, str) or role not in ROLE_RANK:
        raise InvalidAssertion("malformed identity in service assertion")
    return Identity(user_id=user_id, role=role, login=str(claims.get("login", "")))


@dataclass(frozen=True)
class Verified:
    issuer: str
    identity: Identity | None
    expires: int


class Verifier:
    """Verifies assertions for one audience; a token verified once is remembered until it expires
    (identical tokens are what the issuer's cache produces, so the hot path is one dict lookup)."""

    def __init__(self, ring: KeyRing, audience: str) -> None:
        self.ring, self.audience = ring, audience
        self._seen: dict[str, Verified] = {}

    def verify(self, token: str) -> Verified:
        now = time.time()
        hit = self._seen.get(token)
        if hit is not None and hit.expires + LEEWAY > now:
            return hit
        claims = self.ring.verify(token, self.audience, now)
        verified = Verified(claims["iss"], claims_identity(claims), claims["exp"])
        if len(self._seen) >= _VERIFIED_CACHE_MAX:  # bounded: a flood of distinct tokens cannot grow it
            self._seen.clear()
        self._seen[token] = verified
        return verified


class Issuer:
    """Signs as one service; one token per (audience, identity) is reused for :data:`REUSE_SECONDS`
    and then replaced, so every token handed out has at least a minute to live."""

    def __init__(self, ring: KeyRing, issuer: str, lifetime: int = MAX_LIFETIME) -> None:
        if not REUSE_SECONDS < lifetime <= MAX_LIFETIME:
            raise ValueError(f"lifetime must be in ({REUSE_SECONDS}, {MAX_LIFETIME}]")
        self.ring, self.issuer, self.lifetime = ring, issuer, lifetime
        self._cache: dict[tuple[str, Identity | None], tuple[str, float]] = {}
        self._bridge_cache: dict[tuple[str, Identity | None], tuple[str, float]] = {}  # apart: other keys
        self._bridge_rings: dict[str, KeyRing] = {}

    def token(self, audience: str, identity: Identity | None = None) -> str:
        now = time.time()
        key = (audience, identity)
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        return self._mint(key, now, self.ring, self._cache)

    def bridge_token(self, slug: str) -> str:
        """For one hosted server's bridge, signed with the key derived for its slug."""
        audience = bridge_audience(slug)
        now = time.time()
        key = (audience, None)
        hit = self._bridge_cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        ring = self._bridge_rings.get(slug)
        if ring is None:
            ring = self._bridge_rings[slug] = self.ring.derive(audience)
        return self._mint(key, now, ring, self._bridge_cache)

    def headers(self, audience: str, identity: Identity | None = None) -> dict[str, str]:
        return {HEADER_ASSERTION: self.token(audience, identity)}

    def _mint(self, key: tuple[str, Identity | None], now: float, ring: KeyRing,
              cache: dict[tuple[str, Identity | None], tuple[str, float]]) -> str:
        audience, identity = key
        iat = int(now)
        claims: dict[str, Any] = {"iss": self.issuer, "aud": audience, "iat": iat, "exp": iat + self.lifetime}
        if identity is not None:
            claims.update(sub=str(identity.user_id), role=identity.role, login=identity.login)
        token = ring.sign(claims)
        if len(cache) >= _VERIFIED_CACHE_MAX:  # bounded (one entry per identity and receiver)
            cache.clear()
        cache[key] = (token, iat + REUSE_SECONDS)
        return token


class TrustMiddleware:
    """Enforced by the shared service runtime on every service, so none can forget it:

    - a request carrying ``X-WeMcp-Assertion`` must carry a valid one for this service (401
      otherwise); the identity it states is what ``CurrentUser`` & co. read;
    - every path under ``/internal/`` needs a valid assertion (the platform calling), or 401;
    - identity headers (``X-WeMcp-User-*``) without an assertion are a forgery or a caller still
      speaking the old protocol: 401 rather than silently anonymous.

    ``edge`` (the gateway): the public port, where clients' identity headers are simply stripped by
    the gateway itself; only the ``/internal/`` rule applies."""

    def __init__(self, app: Any, verifier: Verifier, edge: bool = False) -> None:
        self.app, self.verifier, self.edge = app, verifier, edge

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        internal = scope["path"].startswith("/internal/")
        if self.edge and not internal:
            await self.app(scope, receive, send)
            return
        token = None
        forged = False
        for k, v in scope["headers"]:
            if k == HEADER_ASSERTION_RAW:
                token = v.decode("latin-1")
            elif k in USER_HEADERS:
                forged = True
        if token is not None:
            try:
                verified = self.verifier.verify(token)
            except InvalidAssertion as exc:
                await _refuse(scope, receive, send, exc.detail)
                return
            scope.setdefault("state", {})[IDENTITY_STATE] = verified.identity
        elif internal:
            await _refuse(scope, receive, send, "internal routes need the platform's service credential")
            return
        elif forged:
            await _refuse(scope, receive, send, "identity headers are accepted only with a service assertion")
            return
        await self.app(scope, receive, send)


async def _refuse(scope: Any, receive: Any, send: Any, detail: str) -> None:
    from wemcp.common.http import problem

    await problem(401, "Unauthorized", detail)(scope, receive, send)


def environment_ring() -> KeyRing:
    """The ring ``WEMCP_SERVICE_KEYS`` names in this process's environment (the development key
    when unset), as every service's settings read it."""
    import os

    return KeyRing.parse(os.environ.get(SETTING) or DEVELOPMENT_KEYS)


_tool_issuers: dict[tuple[KeyRing, str], Issuer] = {}


def platform_headers(audience: str, identity: Identity | None = None, *, issuer: str = "tool") -> dict[str, str]:
    """The credential header for one call to a service, signed with the environment's ring: for
    operator tools, test kits and benches that call a service directly (as the platform, or as the
    gateway would for ``identity``)."""
    return _tool_issuer(issuer).headers(audience, identity)


class PlatformHeaders(Mapping[str, str]):
    """:func:`platform_headers` that stay valid however long they are kept (a test module's
    constant): the token is fetched from the issuer's cache on every read."""

    def __init__(self, audience: str, identity: Identity | None = None, issuer: str = "tool") -> None:
        self.audience, self.identity, self.issuer = audience, identity, issuer

    def _now(self) -> dict[str, str]:
        return platform_headers(self.audience, self.identity, issuer=self.issuer)

    def __getitem__(self, key: str) -> str:
        return self._now()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return 1


def platform_bridge_headers(slug: str) -> dict[str, str]:
    """The credential header for one call to a hosted server's bridge, as the gateway signs it."""
    return {HEADER_ASSERTION: _tool_issuer("tool").bridge_token(slug)}


class BridgeHeaders(PlatformHeaders):
    """:func:`platform_bridge_headers`, valid however long they are kept."""

    def __init__(self, slug: str) -> None:
        super().__init__(bridge_audience(slug))
        self.slug = slug

    def _now(self) -> dict[str, str]:
        return platform_bridge_headers(self.slug)


def _tool_issuer(issuer: str) -> Issuer:
    ring = environment_ring()
    signer = _tool_issuers.get((ring, issuer))
    if signer is None:
        signer = _tool_issuers[(ring, issuer)] = Issuer(ring, issuer)
    return signer


class BridgeGuard:
    """What a deployer bridge checks on every request for ``/s/<slug>/...``: an assertion signed with
    the key derived for that slug (one verifier, with its cache, per slug)."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._verifiers: dict[str, Verifier] = {}

    def check(self, slug: str, token: str | None) -> str | None:
        """None when the call may go on, else why not (for a 401)."""
        if token is None:
            return "the bridge answers only the platform (service assertion missing)"
        verifier = self._verifiers.get(slug)
        if verifier is None:
            audience = bridge_audience(slug)
            verifier = self._verifiers[slug] = Verifier(self.ring.derive(audience), audience)
        try:
            verifier.verify(token)
        except InvalidAssertion as exc:
            return exc.detail
        return None

    def forget(self, slug: str) -> None:
        self._verifiers.pop(slug, None)
