"""Quota policies as the hot path sees them: an in-memory :class:`PolicySet`, kept fresh.

Postgres (table ``ratelimit.quota_policies``) is the source of truth and only the ratelimit service
reads it. On every change, and at start-up, the service writes a JSON snapshot to Redis
(``ratelimit:policies:snapshot``) and publishes its version on ``ratelimit:policies:changed``.
:class:`RedisPolicyCache` (inside every gateway process) loads the snapshot once, then reloads it
when a change is announced, and at least every ``max_age`` seconds in case an announcement was
missed (Redis pub/sub is at-most-once). Looking a policy up is a dict access: no I/O on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from redis.asyncio import Redis

SubjectKind = Literal["server", "agent"]
KINDS: tuple[SubjectKind, ...] = ("server", "agent")

SNAPSHOT_KEY = "ratelimit:policies:snapshot"
CHANGED_CHANNEL = "ratelimit:policies:changed"

log = logging.getLogger("wemcp.quota.policy")


@dataclass(frozen=True, slots=True)
class Limits:
    """Effective limits for one subject. ``per_user_daily``: system-key calls one user may make per
    day (None = unlimited). ``global_daily_cap``: system-key calls all users together may make per
    day (servers only; None = no cap)."""

    per_user_daily: int | None
    global_daily_cap: int | None = None


@dataclass(frozen=True, slots=True)
class Override:
    """A per-subject override; a None field inherits the kind's default."""

    per_user_daily: int | None = None
    global_daily_cap: int | None = None


# (kind, subject id, user id) -> (calls per day or None for unlimited, expiry as unix seconds or None)
Entitlements = dict[tuple[str, str, str], tuple[int | None, float | None]]


@dataclass
class PolicySet:
    defaults: dict[str, Limits]
    overrides: dict[tuple[str, str], Override] = field(default_factory=dict)
    version: int = 0
    # users granted a plan through goods (goods.entitlement_changed): their own daily limit
    entitlements: Entitlements = field(default_factory=dict)
    _resolved: dict[tuple[str, str], Limits] = field(default_factory=dict, repr=False)

    def limits(self, kind: str, subject_id: str) -> Limits:
        key = (kind, subject_id)
        got = self._resolved.get(key)
        if got is None:
            base = self.defaults[kind]
            o = self.overrides.get(key)
            got = base if o is None else Limits(
                o.per_user_daily if o.per_user_daily is not None else base.per_user_daily,
                o.global_daily_cap if o.global_daily_cap is not None else base.global_daily_cap)
            if len(self._resolved) < 100_000:
                self._resolved[key] = got
        return got

    def entitlement(self, kind: str, subject_id: str, user_id: str, now: float) -> tuple[bool, int | None]:
        """(True, the user's daily limit) when the user holds an unexpired plan for the subject;
        (False, None) otherwise (the subject's limits apply)."""
        if not self.entitlements:
            return False, None
        got = self.entitlements.get((kind, subject_id, user_id))
        if got is None or (got[1] is not None and got[1] <= now):
            return False, None
        return True, got[0]

    def to_json(self) -> str:
        return json.dumps({
            "version": self.version,
            "defaults": {k: {"per_user_daily": v.per_user_daily, "global_daily_cap": v.global_daily_cap}
                         for k, v in self.defaults.items()},
            "overrides": [{"kind": k, "id": i, "per_user_daily": o.per_user_daily,
                           "global_daily_cap": o.global_daily_cap} for (k, i), o in self.overrides.items()],
            "entitlements": [{"kind": k, "id": i, "user": u, "per_user_daily": n, "expires": e}
                             for (k, i, u), (n, e) in self.entitlements.items()],
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes, fallback: Mapping[str, Limits]) -> PolicySet:
        data = json.loads(raw)
        defaults = dict(fallback)
        for kind, d in (data.get("defaults") or {}).items():
            if kind in KINDS:
                defaults[kind] = Limits(d.get("per_user_daily"), d.get("global_daily_cap"))
        overrides = {(o["kind"], o["id"]): Override(o.get("per_user_daily"), o.get("global_daily_cap"))
                     for o in data.get("overrides") or () if o.get("kind") in KINDS}
        entitlements = {(e["kind"], e["id"], e["user"]): (e.get("per_user_daily"), e.get("expires"))
                        for e in data.get("entitlements") or () if e.get("kind") in KINDS}
        return cls(defaults=defaults, overrides=overrides, version=int(data.get("version", 0)),
                   entitlements=entitlements)


class PolicySource(Protocol):
    def limits(self, kind: str, subject_id: str) -> Limits: ...

    def entitlement(self, kind: str, subject_id: str, user_id: str, now: float) -> tuple[bool, int | None]: ...


class StaticPolicies:
    """Fixed policies: for tests, benchmarks and a gateway run without the ratelimit service."""

    def __init__(self, server_daily: int | None = 1000, agent_daily: int | None = 100, *,
                 server_global_cap: int | None = None,
                 overrides: Iterable[tuple[str, str, Override]] = (),
                 entitlements: Entitlements | None = None) -> None:
        self.set = PolicySet(
            defaults={"server": Limits(server_daily, server_global_cap), "agent": Limits(agent_daily, None)},
            overrides={(k, i): o for k, i, o in overrides}, entitlements=dict(entitlements or {}))

    def limits(self, kind: str, subject_id: str) -> Limits:
        return self.set.limits(kind, subject_id)

    def entitlement(self, kind: str, subject_id: str, user_id: str, now: float) -> tuple[bool, int | None]:
        return self.set.entitlement(kind, subject_id, user_id, now)


async def publish_snapshot(redis: Redis, policies: PolicySet) -> None:
    """Written by the ratelimit service after every committed policy change."""
    await redis.set(SNAPSHOT_KEY, policies.to_json())
    await redis.publish(CHANGED_CHANNEL, str(policies.version))


class RedisPolicyCache:
    """The policies every quota client uses, loaded from the service's Redis snapshot."""

    def __init__(self, redis: Redis, fallback: Mapping[str, Limits], *, max_age: float = 30.0) -> None:
        self.redis = redis
        self.fallback = dict(fallback)
        self.max_age = max_age
        self.current = PolicySet(defaults=dict(fallback))
        self.loaded_at = float("-inf")
        self.reloads = 0
        self._task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None

    def limits(self, kind: str, subject_id: str) -> Limits:
        if time.monotonic() - self.loaded_at > self.max_age and self._refreshing is None:
            # stale (a missed announcement, or Redis was away): reload off the hot path
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly())
        return self.current.limits(kind, subject_id)

    def entitlement(self, kind: str, subject_id: str, user_id: str, now: float) -> tuple[bool, int | None]:
        return self.current.entitlement(kind, subject_id, user_id, now)

    async def refresh(self) -> None:
        raw = await self.redis.get(SNAPSHOT_KEY)
        self.current = (PolicySet.from_json(raw, self.fallback) if raw
                        else PolicySet(defaults=dict(self.fallback)))
        self.loaded_at = time.monotonic()
        self.reloads += 1

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("policy_refresh_failed: %s", exc)
            self.loaded_at = time.monotonic() - self.max_age + 1.0  # try again in a second
        finally:
            self._refreshing = None

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def aclose(self) -> None:
        for task in (self._task, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANGED_CHANNEL)
                await self.refresh()  # anything announced while we were not listening
                backoff = 0.5
                while True:
                    msg: Any = await pubsub.get_message(timeout=self.max_age)
                    if msg is not None:
                        await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("policy_listener_failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
