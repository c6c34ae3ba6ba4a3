"""Signed agent-run contexts: the proof that an MCP call is made inside an agent run.

The agents service admits a call to an agent (which *is* counted against the per-agent quota),
then signs a short-lived run context and sends it along with every MCP call the agent makes while
answering (the gateway forwards it as ``X-WeMcp-Agent-Run``). The quota client verifies it locally
(HMAC-SHA256 over the payload with a secret both services share) and does not count those calls.
A forged, tampered, expired or foreign (another user's) context is rejected and the call is counted
like any other: a bad token can never make a call cheaper than no token.

A context names the servers the saved agent lists (``servers``): only calls to those are the run's.
Tools a caller adds to an agent run, and a context replayed against any other server, are counted
like ordinary calls (the client rejects the context there with ``other_server``).

Token: ``v1.<base64url(payload JSON)>.<base64url(HMAC-SHA256(secret, "v1." + payload part))>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

VERSION = "v1"
MAX_TOKEN_LENGTH = 4096  # 16 server slugs of up to 100 characters fit
DEFAULT_TTL_SECONDS = 15 * 60


class InvalidRunContext(ValueError):
    """Why a run context was rejected; ``reason`` is one of malformed, bad_signature, expired,
    wrong_user, no_secret (and, from the quota client, other_server)."""

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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise InvalidRunContext("no_secret", "no agent-run secret is configured")
    return key


def sign_run_context(secret: str | bytes, *, user_id: UUID | str, agent_id: UUID | str, run_id: str,
                     servers: Iterable[str] = (), ttl_seconds: int = DEFAULT_TTL_SECONDS,
                     now: float | None = None) -> str:
    """Issued by the agents service when it starts a run that was admitted by the quota; ``servers``:
    the slugs the saved agent lists (calls to any other server are counted)."""
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued = int(now if now is not None else time.time())
    payload = {"u": str(user_id), "a": str(agent_id), "r": str(run_id), "s": sorted(set(servers)), "iat": issued,
               "exp": issued + int(ttl_seconds)}
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{VERSION}.{body}"
    sig = hmac.new(_key(secret), signed.encode("ascii"), hashlib.sha256).digest()
    return f"{signed}.{_b64(sig)}"


def verify_run_context(token: str, secret: str | bytes, *, user_id: UUID | str | None = None,
                       now: float | None = None) -> RunContext:
    """The context if the token is authentic, unexpired and (when ``user_id`` is given) issued to that
    user; raises :class:`InvalidRunContext` otherwise."""
    key = _key(secret)
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidRunContext("malformed", "not a token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise InvalidRunContext("malformed", "expected v1.<payload>.<signature>")
    try:
        sig = _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise InvalidRunContext("malformed", "signature is not base64url") from None
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode("ascii", "replace"), hashlib.sha256).digest()
    if not hmac.compare_digest(sig, expected):
        raise InvalidRunContext("bad_signature")
    try:
        data = json.loads(_unb64(parts[1]))
        servers = data.get("s", [])  # a context without it covers no server
        if not isinstance(servers, list) or not all(isinstance(x, str) for x in servers):
            raise TypeError("s")
        ctx = RunContext(user_id=str(data["u"]), agent_id=str(data["a"]), run_id=str(data["r"]),
                         issued_at=int(data["iat"]), expires_at=int(data["exp"]), servers=frozenset(servers))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise InvalidRunContext("malformed", "payload is not a run context") from None
    current = now if now is not None else time.time()
    if current >= ctx.expires_at:
        raise InvalidRunContext("expired")
    if user_id is not None and ctx.user_id != str(user_id):
        raise InvalidRunContext("wrong_user", "the run context belongs to another user")
    return ctx
