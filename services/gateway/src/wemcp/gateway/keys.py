"""Key resolution per call: which credential values fill a server's declared inputs, and from where.

Order, per input: a value sent with this request (``X-WeMcp-Env-<NAME>``) > the user's own value
in the vault (auth's internal API) > the user's OAuth connection to the server (fills the first
secret input still empty) > the system key (set per server by admins) > the input's default.

The call's ``key_source`` decides the quota. It is an own key (``request``, ``vault`` or
``oauth``, the best of them; unmetered) only when the caller's own values filled *every* input the
server requires as a key (``Route.needs``: required secrets and required placeholders of a pasted
config) and the platform filled nothing. Otherwise it is ``system`` (the platform's values were
used) or ``none`` (they were not, e.g. a server that needs no key); both are metered. So a junk
value for an optional secret, a partial set of own values, or values for a server that needs no key
never make a call free. Values are not checked against the provider (the gateway cannot): the rule
is about coverage — a caller who sends a wrong key of their own gets the provider's refusal, never
the platform's key. Headers for names the server does not declare are ignored (not forwarded).

Vault and OAuth lookups are cached per (user, server) for a short TTL, so a warm hot path makes no
cross-service call; values live only in memory and are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode
from uuid import UUID

import orjson

from wemcp.common.logging import get_logger
from wemcp.common.trust import Issuer
from wemcp.gateway.h1client import H1Client
from wemcp.gateway.routes import PLACEHOLDER, Route

log = get_logger("wemcp.gateway.keys")
ENV_PREFIX = "x-wemcp-env-"
SYSTEM_USER = UUID(int=0)  # the vault principal that holds admins' system keys
_RANK = {"request": 4, "vault": 3, "oauth": 2, "system": 1, "none": 0}


@dataclass(frozen=True)
class Resolved:
    values: dict[str, str]
    source: str  # request | vault | oauth | system | none
    missing: tuple[str, ...] = ()  # required inputs nobody supplied
    fingerprint: str = ""  # hash of the values: the pool key part that keeps users' secrets apart

    @property
    def own_key(self) -> bool:
        return self.source in ("request", "vault", "oauth")


def fill(template: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def request_values(headers: Any) -> dict[str, str]:
    """``X-WeMcp-Env-<NAME>`` headers of a request, names upper-cased (HTTP headers are
    case-insensitive; declared inputs are matched case-insensitively too)."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        if k.lower().startswith(ENV_PREFIX) and v:
            out[k[len(ENV_PREFIX):].upper()] = v
    return out


class KeyResolver:
    def __init__(self, http: H1Client | None, auth_url: str, *, signer: Issuer,
                 system_keys: dict[str, dict[str, str]], ttl: float = 10.0, system_from_vault: bool = True) -> None:
        self.http = http
        self.signer = signer  # the gateway's service credential for auth's internal routes
        self.auth_url = auth_url.rstrip("/")
        self.system_keys = system_keys
        self.ttl = ttl
        self.system_from_vault = system_from_vault
        self._vault: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._oauth: dict[tuple[str, str], tuple[float, str | None]] = {}
        self.lookups = 0  # cross-service calls made (for tests: warm means zero)
        self._sub: Any = None

    def forget(self, slug: str | None = None, user_id: str | None = None) -> None:
        for cache in (self._vault, self._oauth):
            for key in [k for k in cache if (slug is None or k[1] == slug) and (user_id is None or k[0] == user_id)]:
                cache.pop(key, None)

    async def subscribe(self, nc: Any) -> None:
        """Auth's ``user.secret_changed`` (core NATS; no values in it) drops the cached values of that
        user (the nil UUID: the system keys) and server, so a saved or deleted key applies at once."""

        async def on_message(msg: Any) -> None:
            try:
                data = orjson.loads(msg.data)
                self.forget(slug=str(data["server"]), user_id=str(data["user_id"]))
            except Exception as exc:
                log.warning("secret_event_ignored", error=type(exc).__name__)

        self._sub = await nc.subscribe("user.secret_changed", cb=on_message)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may already be closed
                await sub.unsubscribe()

    async def resolve(self, route: Route, user_id: UUID | None, headers: Any) -> Resolved:
        if not route.inputs:
            return Resolved({}, "none", (), "")
        given = request_values(headers)
        values: dict[str, str] = {}
        sources: dict[str, str] = {}  # the caller's own values only: request | vault | oauth
        by_upper = {i.name.upper(): i for i in route.inputs}
        for upper, value in given.items():
            inp = by_upper.get(upper)
            if inp is not None:  # an undeclared name is ignored: neither used nor forwarded
                values[inp.name], sources[inp.name] = value, "request"
        if len(values) < len(route.inputs) and user_id is not None:
            for name, value in (await self._vault_values(str(user_id), route.slug)).items():
                inp = by_upper.get(name.upper())
                if inp is not None and inp.name not in values:
                    values[inp.name], sources[inp.name] = value, "vault"
            empty = [i for i in route.secret_inputs if i.name not in values]
            if empty:
                token = await self._oauth_token(str(user_id), route.slug)
                if token:
                    values[empty[0].name], sources[empty[0].name] = token, "oauth"
        platform = False  # the platform's (system) values filled something
        if len(values) < len(route.inputs):
            system = dict(self.system_keys.get(route.slug, {}))
            if self.system_from_vault and len(system) < len(route.inputs):
                for k, v in (await self._vault_values(str(SYSTEM_USER), route.slug)).items():
                    system.setdefault(k, v)
            for inp in route.inputs:
                if inp.name not in values and inp.name in system:
                    values[inp.name], platform = system[inp.name], True
        for inp in route.inputs:
            if inp.name not in values and inp.default is not None:
                values[inp.name] = inp.default
        needs = route.needs
        if needs and not platform and needs <= sources.keys():
            source = max((sources[n] for n in needs), key=_RANK.__getitem__)
        else:
            source = "system" if platform else "none"
        missing = tuple(i.name for i in route.inputs if i.required and i.name not in values)
        fp = ""
        if values:
            fp = hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        return Resolved(values, source, missing, fp)

    async def _from_auth(self, path: str) -> Any:
        """``GET /internal/auth/<path>`` on auth with the gateway's credential (counted in ``lookups``):
        the JSON body of a 200, None for another status; raises when auth cannot be reached in time."""
        assert self.http is not None
        self.lookups += 1
        async with asyncio.timeout(3), await self.http.request(
                "GET", f"{self.auth_url}/internal/auth/{path}", headers=self.signer.headers("auth")) as r:
            return orjson.loads(await r.read()) if r.status == 200 else None

    async def _vault_values(self, user_id: str, slug: str) -> dict[str, str]:
        key = (user_id, slug)
        hit = self._vault.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        values: dict[str, str] = {}
        if self.http is not None:
            try:
                body = await self._from_auth(f"vault/{quote(user_id)}?{urlencode({'server': slug})}")
                if body is not None:
                    values = {str(k): str(v) for k, v in (body.get("values") or {}).items()}
            except Exception as exc:  # auth down: own keys unknown, fall back (logged, no values)
                log.warning("vault_lookup_failed", server=slug, error=type(exc).__name__)
                self._vault[key] = (now + 1.0, values)
                return values
        self._vault[key] = (now + self.ttl, values)
        return values

    async def _oauth_token(self, user_id: str, slug: str) -> str | None:
        key = (user_id, slug)
        hit = self._oauth.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        token: str | None = None
        until = now + self.ttl
        if self.http is not None:
            try:
                body = await self._from_auth(f"connections/{quote(user_id)}/{quote(slug, safe='')}")
                if body is not None:
                    token = body.get("access_token") or None
            except Exception as exc:
                log.warning("connection_lookup_failed", server=slug, error=type(exc).__name__)
                until = now + 1.0
        self._oauth[key] = (until, token)
        return token
