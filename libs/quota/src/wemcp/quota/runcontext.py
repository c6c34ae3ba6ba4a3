"""Signed agent-run contexts: the proof that an MCP call is made inside an agent run.

The agents service admits a call to an agent (which *is* counted against the per-agent quota),
then signs a short-lived run context and sends it along with every MCP call the agent makes while
answering (the gateway forwards it as ``X-WeMcp-Agent-Run``). The quota client verifies it locally
with a secret both services share and does not count those calls. A forged, tampered, expired,
foreign (another user's) or wrong-audience context is rejected and the call is counted like any
other: a bad token can never make a call cheaper than no token.

A context names the servers the saved agent lists (``servers``): only calls to those are the run's.
Tools a caller adds to an agent run, and a context replayed against any other server, are counted
like ordinary calls (the client rejects the context there with ``other_server``).

Token: a JWT (PyJWT), HS256 only, header ``kid`` naming the key of the ring that signed it; claims
``u`` (user id), ``a`` (agent id), ``r`` (run id), ``s`` (the agent's server slugs, sorted), ``iat``,
``exp`` and ``aud`` = :data:`AUDIENCE` (a JWT minted for anything else is refused here). The HMAC
key is derived from the configured secret (:func:`signing_key`).

Key ring (rotation): the shared secret (``WEMCP_AGENT_RUN_SECRET``) may list several secrets
separated by commas; the first signs, every one verifies. Rotate by adding the new secret *second*
on every service, then moving it first (the agents service signs with it), then, after the run
context lifetime (``agent_run_ttl_seconds``), removing the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import UUID

import jwt

ALGORITHM = "HS256"
AUDIENCE = "wemcp:agent-run"
MAX_TOKEN_LENGTH = 4096  # 16 server slugs of up to 100 characters fit
DEFAULT_TTL_SECONDS = 15 * 60
_CLAIMS = ("u", "a", "r", "iat", "exp", "aud")


class InvalidRunContext(ValueError):
    """Why a run context was rejected; ``reason`` is one of malformed, bad_signature, expired,
    wrong_audience, wrong_user, no_secret (and, from the quota client, other_server)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RunContext:
    user_id: str
    agent_id: str
    run_id: str
    issued_at: int
    expires_at: int
    servers: frozenset[str] = frozenset()  # the agent's own servers (slugs): the only ones it covers


def key_id(secret: bytes) -> str:
    """The ``kid`` of a secret: a hash that names it without revealing it."""
    return hashlib.sha256(b"wemcp-agent-run-kid\x00" + secret).hexdigest()[:12]


def signing_key(secret: bytes) -> bytes:
    """The HMAC key derived from a configured secret: always 32 bytes (RFC 7518 §3.2 asks HS256 for
    at least that; the setting allows 16 characters), and bound to this one use."""
    return hmac.new(b"wemcp-agent-run-context", secret, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class RunContextKeys:
    """The key ring: ``(kid, HMAC key)`` pairs (:func:`key_id`, :func:`signing_key` of each configured
    secret); the first signs, all verify."""

    keys: tuple[tuple[str, bytes], ...]

    @property
    def signing(self) -> tuple[str, bytes]:
        return self.keys[0]

    def get(self, kid: str) -> bytes | None:
        return next((k for i, k in self.keys if i == kid), None)


@lru_cache(maxsize=64)
def _ring(secret: str | bytes) -> RunContextKeys:
    raw = secret.encode() if isinstance(secret, str) else secret
    parts = [p.strip() for p in raw.split(b",")]
    if not any(parts):
        raise InvalidRunContext("no_secret", "no agent-run secret is configured")
    if not all(parts):
        raise ValueError("an agent-run secret list has an empty entry")
    return RunContextKeys(tuple((key_id(p), signing_key(p)) for p in parts))


def keyring(secret: str | bytes | RunContextKeys) -> RunContextKeys:
    """The ring of a configured secret (``"s1"`` or ``"s1,s2"``); an empty one raises ``no_secret``."""
    return secret if isinstance(secret, RunContextKeys) else _ring(secret)


def sign_run_context(secret: str | bytes | RunContextKeys, *, user_id: UUID | str, agent_id: UUID | str,
                     run_id: str, servers: Iterable[str] = (), ttl_seconds: int = DEFAULT_TTL_SECONDS,
                     now: float | None = None) -> str:
    """Issued by the agents service when it starts a run that was admitted by the quota; ``servers``:
    the slugs the saved agent lists (calls to any other server are counted)."""
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    kid, key = keyring(secret).signing
    issued = int(now if now is not None else time.time())
    claims = {"u": str(user_id), "a": str(agent_id), "r": str(run_id), "s": sorted(set(servers)),
              "iat": issued, "exp": issued + int(ttl_seconds), "aud": AUDIENCE}
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


def verify_run_context(token: str, secret: str | bytes | RunContextKeys, *, user_id: UUID | str | None = None,
                       now: float | None = None) -> RunContext:
    """The context if the token is authentic, meant for run contexts, unexpired and (when ``user_id``
    is given) issued to that user; raises :class:`InvalidRunContext` otherwise. Expiry is checked
    against ``now`` (the quota client's clock) rather than PyJWT's, so an injected clock holds."""
    ring = keyring(secret)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidRunContext("malformed", "not a token")
    ctx = _verified.get((token, ring))
    if ctx is None:
        ctx = _authentic(token, ring)
        if len(_verified) >= _VERIFIED_MAX:  # bounded: forget everything, verify anew
            _verified.clear()
        _verified[(token, ring)] = ctx
    current = now if now is not None else time.time()
    if current >= ctx.expires_at:
        raise InvalidRunContext("expired")
    if user_id is not None and ctx.user_id != str(user_id):
        raise InvalidRunContext("wrong_user", "the run context belongs to another user")
    return ctx


# Tokens whose signature, audience and claims were checked, by (token, ring): every MCP call of a run
# carries the same token, so a process checks it once (PyJWT's decode is ~10x the cost of a dict
# lookup); expiry and the user are still checked on every call. Only an authentic token gets here.
_VERIFIED_MAX = 4096
_verified: dict[tuple[str, RunContextKeys], RunContext] = {}


def _authentic(token: str, ring: RunContextKeys) -> RunContext:
    """The context a token carries if it is a JWT of this ring for run contexts; raises otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise InvalidRunContext("malformed", "not a JWT") from None
    kid = header.get("kid")
    key = ring.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidRunContext("bad_signature", "signed with a key this service does not hold")
    try:
        data: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=AUDIENCE,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "require": list(_CLAIMS)})
    except jwt.InvalidSignatureError:
        raise InvalidRunContext("bad_signature") from None
    except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
        if isinstance(exc, jwt.InvalidAudienceError):
            raise InvalidRunContext("wrong_audience", "not an agent-run context") from None
        raise InvalidRunContext("malformed", "payload is not a run context") from None
    except jwt.InvalidTokenError:
        raise InvalidRunContext("malformed", "payload is not a run context") from None
    try:
        servers = data.get("s", [])  # a context without it covers no server
        if not isinstance(servers, list) or not all(isinstance(x, str) for x in servers):
            raise TypeError("s")
        ctx = RunContext(user_id=str(data["u"]), agent_id=str(data["a"]), run_id=str(data["r"]),
                         issued_at=int(data["iat"]), expires_at=int(data["exp"]), servers=frozenset(servers))
    except (ValueError, KeyError, TypeError):
        raise InvalidRunContext("malformed", "payload is not a run context") from None
    return ctx
