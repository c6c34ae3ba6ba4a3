"""The quota decision, as a library the gateway runs in-process (the recommended path).

``await QuotaClient(redis, policies).decide(user_id, "server", slug, key_source)`` returns a
:class:`Decision`. A metered call costs exactly one Redis round trip: one Lua script that checks the
caller's daily counter (and the server's global daily cap) and, only if both have room, increments
them. Redis runs a script atomically, so the decision is exact however many coroutines, processes
or gateway machines decide at once.

- Own-key calls (``key_source`` request/vault/oauth) are unmetered: no Redis call at all.
- A valid signed agent-run context (see :mod:`wemcp.quota.runcontext`) makes a call to one of
  the servers it names (the saved agent's own) unmetered; an invalid one, or one presented on a
  call to any other server, is ignored and the call counted.
- The day ends at midnight in ``zone`` (default Asia/Shanghai); counters live in keys named after
  the local day and expire an hour after it ends, so a rollover needs no reset job.
- Decisions taken in the same event-loop iteration (concurrent calls arriving together) travel to
  Redis as one pipeline (:class:`_ScriptBatch`): one write and one read for all of them instead of a
  round trip each. Each script still runs atomically on its own, so exactness is unchanged; a lone
  decision is sent at once, so there is no added wait.
- A caller far from their limit can be decided *alongside* the call instead of before it
  (:meth:`QuotaClient.decide_ahead`): when this client saw, within the last ``ahead_seconds``, at
  least ``ahead_margin`` calls left for that caller and subject beyond the decisions already in
  flight, the decision starts and the caller forwards the call at once, awaiting the decision only
  to put its headers on the reply. In one process this is exact (the margin covers everything in
  flight). With several gateways sharing a caller's quota, a refusal can come late — after the
  call was already forwarded — only if the other gateways used the whole margin within
  ``ahead_seconds``; the overshoot is bounded by the calls in flight and never counted twice.
- Redis unreachable or slow (``timeout``): system-key calls are refused by default
  (``fail_closed``), logged and counted in ``stats`` and the ``ratelimit.redis_errors`` metric.

Keys (``ratelimit:<purpose>:<id>``; the ``{...}`` hash tag keeps a subject's keys in one Redis
Cluster slot, so the script stays legal on a cluster):
    ratelimit:count:{server:<slug>}:<yyyymmdd>:<user_id>   one user's calls to one server today
    ratelimit:count:{agent:<id>}:<yyyymmdd>:<user_id>      one user's calls to one agent today
    ratelimit:cap:{server:<slug>}:<yyyymmdd>               all system-key calls to one server today
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from wemcp.quota.policy import Limits, PolicySource, RedisPolicyCache
from wemcp.quota.runcontext import InvalidRunContext, verify_run_context

log = logging.getLogger("wemcp.quota.client")

SubjectKind = Literal["server", "agent"]
KeySource = Literal["request", "vault", "oauth", "system", "none"]
# Calls on the user's own credentials cost the platform nothing: never metered.
OWN_KEY_SOURCES = frozenset({"request", "vault", "oauth"})
KEY_GRACE_SECONDS = 3600  # counters outlive their day by an hour (late readers, clock skew)
SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@/:+-]{0,199}$")

Reason = Literal["counted", "own_key", "agent_run", "user_limit", "global_cap", "unavailable"]

# KEYS[1] the caller's counter, KEYS[2] (servers only) the global counter.
# ARGV[1] per-user limit (-1 = unlimited), ARGV[2] global cap (-1 = none), ARGV[3] TTL in seconds
# (the rest of the day plus a grace hour; relative, so an injected clock works against a real Redis).
# Returns one integer, user count * 3 + code (0 allowed, 1 per-user limit, 2 global cap): a single
# RESP integer is the cheapest reply for the client to parse.
DECIDE_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local gused = 0
if #KEYS > 1 then gused = tonumber(redis.call('GET', KEYS[2]) or '0') end
if limit >= 0 and used >= limit then return used * 3 + 1 end
if #KEYS > 1 and cap >= 0 and gused >= cap then return used * 3 + 2 end
used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if #KEYS > 1 then
  gused = redis.call('INCR', KEYS[2])
  if gused == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
end
return used * 3
"""


class InvalidSubject(ValueError):
    pass


class _ScriptBatch:
    """Runs one Lua script for many callers, auto-pipelined: calls made in the same event-loop
    iteration are sent as one pipeline of ``EVALSHA`` commands (one write, replies read together),
    the way ioredis auto-pipelines; a batch never waits for another (holding calls back while one
    pipeline was out made a decision wait for a stranger's round trip too, and under a loaded event
    loop that crossed the decision timeout). A lone call is one ``EVALSHA``, sent at once.
    ``NOSCRIPT`` (Redis restarted or flushed its script cache) loads the script once and runs the
    affected calls again — a refused ``EVALSHA`` ran nothing, so nothing is counted twice."""

    def __init__(self, redis: Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False  # a flush is queued for the end of this loop iteration
        self.batches = 0  # pipelines sent (stats and tests)
        self.largest = 0  # most calls in one pipeline

    def __call__(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        batch = [b for b in batch if not b[2].done()]  # a caller that gave up (timeout) sends nothing
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        try:
            results = await self._evalsha(batch)
            retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if retry:
                await self.redis.script_load(self.source)
                again = await self._evalsha([batch[i] for i in retry])
                for i, r in zip(retry, again, strict=True):
                    results[i] = r
        except BaseException as exc:  # the connection failed: every caller of the batch hears it
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RedisError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, fut), r in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(r, BaseException):
                fut.set_exception(r)
            else:
                fut.set_result(r)

    async def _evalsha(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        if len(batch) == 1:
            keys, args, _ = batch[0]
            try:
                return [await self.redis.evalsha(self.sha, len(keys), *keys, *args)]
            except NoScriptError as exc:
                return [exc]
        pipe = self.redis.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason
    limit: int | None  # the per-user daily limit that applied (None: unmetered or unlimited)
    remaining: int | None  # calls left today after this one (None: unmetered or unlimited)
    reset_at: datetime  # when today's counters reset (midnight in the configured zone)
    retry_after: int | None  # seconds until a refused call may succeed
    message: str
    counted: bool = False  # this call consumed one unit of quota
    used: int | None = None  # the caller's count today, after this call
    run_context_error: str | None = None  # why a presented agent-run context was rejected

    def headers(self) -> dict[str, str]:
        """Response headers for the gateway: ``Retry-After`` on refusals, ``RateLimit-*`` when metered."""
        h: dict[str, str] = {}
        if self.limit is not None:
            h["X-RateLimit-Limit"] = str(self.limit)
            h["X-RateLimit-Remaining"] = str(self.remaining if self.remaining is not None else 0)
            h["X-RateLimit-Reset"] = str(int(self.reset_at.timestamp()))
        if not self.allowed and self.retry_after is not None:
            h["Retry-After"] = str(self.retry_after)
        return h

    def problem(self) -> dict[str, Any]:
        """The problem+json body the gateway returns with 429 (or 503 when ``unavailable``)."""
        status = 503 if self.reason == "unavailable" else 429
        return {"type": f"https://wemcp.dev/problems/{self.reason.replace('_', '-')}",
                "title": "Service Unavailable" if status == 503 else "Too Many Requests",
                "status": status, "detail": self.message, "reason": self.reason, "limit": self.limit,
                "remaining": self.remaining, "reset_at": self.reset_at.isoformat(),
                "retry_after": self.retry_after}

    def jsonrpc_error(self) -> dict[str, Any]:
        """The error object for a refusal inside an MCP (JSON-RPC) response."""
        return {"code": -32029 if self.reason != "unavailable" else -32030, "message": self.message,
                "data": {"reason": self.reason, "limit": self.limit, "reset_at": self.reset_at.isoformat(),
                         "retry_after": self.retry_after}}

    def to_wire(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason, "limit": self.limit,
                "remaining": self.remaining, "reset_at": self.reset_at.isoformat(),
                "retry_after": self.retry_after, "message": self.message, "counted": self.counted,
                "used": self.used, "run_context_error": self.run_context_error}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Decision:
        return cls(allowed=d["allowed"], reason=d["reason"], limit=d["limit"], remaining=d["remaining"],
                   reset_at=datetime.fromisoformat(d["reset_at"]), retry_after=d["retry_after"],
                   message=d["message"], counted=d.get("counted", False), used=d.get("used"),
                   run_context_error=d.get("run_context_error"))


@dataclass
class QuotaStats:
    decisions: int = 0
    counted: int = 0
    refused: int = 0
    unmetered: int = 0
    redis_errors: int = 0
    run_context_rejected: int = 0


@dataclass(slots=True)
class _Day:
    start: float
    end: float
    tag: str  # yyyymmdd, local
    reset_at: datetime
    date: date


def _fmt_wait(seconds: int) -> str:
    h, rem = divmod(max(seconds, 0), 3600)
    m = rem // 60
    return f"{h}h{m:02d}m" if h else f"{max(m, 1)}m"


@dataclass
class QuotaClient:
    redis: Redis
    policies: PolicySource
    zone: str = "Asia/Shanghai"
    clock: Callable[[], float] = time.time  # unix seconds; tests inject their own
    fail_closed: bool = True
    timeout: float = 0.25
    unavailable_retry_after: int = 5
    run_context_secret: str | None = None
    ahead_margin: int = 64  # decide_ahead: calls left beyond those in flight (0 turns it off)
    ahead_seconds: float = 1.0  # decide_ahead: how fresh the last known count must be
    stats: QuotaStats = field(default_factory=QuotaStats)

    def __post_init__(self) -> None:
        # counter key -> (when seen, calls left then) and -> decisions started ahead, not yet back
        self._left: dict[str, tuple[float, int]] = {}
        self._ahead: dict[str, int] = {}
        self._tz = ZoneInfo(self.zone)
        self._day: _Day | None = None
        self._script = _ScriptBatch(self.redis, DECIDE_LUA)
        self._errors_metric: Any = None
        try:
            from wemcp.common.telemetry import meter

            self._errors_metric = meter("wemcp.ratelimit").create_counter(
                "ratelimit.redis_errors", description="quota decisions made without Redis")
        except Exception:  # telemetry is optional for an embedding process
            self._errors_metric = None

    @classmethod
    def from_settings(cls, redis: Redis, policies: PolicySource, settings: Any,
                      clock: Callable[[], float] | None = None) -> QuotaClient:
        secret = settings.agent_run_secret.get_secret_value() if settings.agent_run_secret else None
        return cls(redis=redis, policies=policies, zone=settings.day_zone, fail_closed=settings.fail_closed,
                   timeout=settings.redis_timeout_seconds, run_context_secret=secret,
                   unavailable_retry_after=settings.unavailable_retry_after_seconds,
                   clock=clock or time.time)

    async def aclose(self) -> None:
        """Stops the policy cache's listener (the Redis client belongs to the caller)."""
        closer = getattr(self.policies, "aclose", None)
        if closer is not None:
            await closer()

    # -- the day -----------------------------------------------------------------------------
    def day(self, now: float | None = None) -> _Day:
        now = self.clock() if now is None else now
        d = self._day
        if d is not None and d.start <= now < d.end:
            return d
        local = datetime.fromtimestamp(now, UTC).astimezone(self._tz)
        start = datetime.combine(local.date(), dtime(0), self._tz)
        end = datetime.combine(local.date() + timedelta(days=1), dtime(0), self._tz)
        d = _Day(start.timestamp(), end.timestamp(), local.strftime("%Y%m%d"), end, local.date())
        self._day = d
        return d

    @staticmethod
    def counter_key(kind: str, subject_id: str, day_tag: str, user_id: str) -> str:
        return f"ratelimit:count:{{{kind}:{subject_id}}}:{day_tag}:{user_id}"

    @staticmethod
    def cap_key(kind: str, subject_id: str, day_tag: str) -> str:
        return f"ratelimit:cap:{{{kind}:{subject_id}}}:{day_tag}"

    # -- the decision ------------------------------------------------------------------------
    def decide_ahead(self, user_id: UUID | str, subject_kind: SubjectKind, subject_id: str,
                     key_source: KeySource | str = "system",
                     in_agent_run_token: str | None = None) -> asyncio.Future[Decision] | None:
        """The decision of a call that may be forwarded before it is known (see the module notes):
        a future, already under way, when the caller is far enough from the limit; None when the
        caller must ``await decide(...)`` first (near or past the limit, unknown, unmetered)."""
        if self.ahead_margin <= 0 or key_source in OWN_KEY_SOURCES or in_agent_run_token:
            return None
        key = self.counter_key(subject_kind, subject_id, self.day().tag, str(user_id))
        seen = self._left.get(key)
        if seen is None or time.monotonic() - seen[0] > self.ahead_seconds:
            return None
        flying = self._ahead.get(key, 0)
        if seen[1] - flying < self.ahead_margin:
            return None
        self._ahead[key] = flying + 1
        fut = asyncio.ensure_future(self.decide(user_id, subject_kind, subject_id, key_source))

        def landed(_: asyncio.Future[Decision]) -> None:
            n = self._ahead.get(key, 1) - 1
            if n > 0:
                self._ahead[key] = n
            else:
                self._ahead.pop(key, None)

        fut.add_done_callback(landed)
        return fut

    async def decide(self, user_id: UUID | str, subject_kind: SubjectKind, subject_id: str,
                     key_source: KeySource | str = "system",
                     in_agent_run_token: str | None = None) -> Decision:
        if subject_kind not in ("server", "agent"):
            raise InvalidSubject(f"subject_kind must be server or agent, not {subject_kind!r}")
        if not SUBJECT_ID.match(subject_id):
            raise InvalidSubject(f"invalid {subject_kind} id {subject_id!r}")
        user = str(user_id)
        now = self.clock()
        day = self.day(now)
        self.stats.decisions += 1
        what = f"{subject_kind} {subject_id!r}"

        if key_source in OWN_KEY_SOURCES:
            self.stats.unmetered += 1
            return Decision(True, "own_key", None, None, day.reset_at, None,
                            f"calls to {what} on your own key are not metered")

        run_error = None
        if in_agent_run_token:
            try:
                ctx = verify_run_context(in_agent_run_token, self.run_context_secret or b"", user_id=user, now=now)
                if subject_kind != "server" or subject_id not in ctx.servers:
                    # a tool the caller added to the run, or the context replayed elsewhere
                    raise InvalidRunContext("other_server", "the run context does not cover this server")
            except InvalidRunContext as exc:
                run_error = exc.reason
                self.stats.run_context_rejected += 1
                log.warning("agent_run_context_rejected reason=%s user=%s %s", exc.reason, user, what)
            else:
                self.stats.unmetered += 1
                return Decision(True, "agent_run", None, None, day.reset_at, None,
                                f"calls made inside an agent run are not counted against {what}")

        limits: Limits = self.policies.limits(subject_kind, subject_id)
        keys = [self.counter_key(subject_kind, subject_id, day.tag, user)]
        cap = limits.global_daily_cap if subject_kind == "server" else None
        if subject_kind == "server":
            keys.append(self.cap_key(subject_kind, subject_id, day.tag))
        limit = limits.per_user_daily
        entitled, plan_limit = self.policies.entitlement(subject_kind, subject_id, user, now)
        if entitled:  # a plan granted through goods: the user's own daily limit (the cap still holds)
            limit = plan_limit
        args = [limit if limit is not None else -1, cap if cap is not None else -1,
                math.ceil(day.end - now) + KEY_GRACE_SECONDS]
        try:
            async with asyncio.timeout(self.timeout):
                used, code = divmod(int(await self._script(keys, args)), 3)
        except (RedisError, OSError, TimeoutError) as exc:
            return self._unavailable(exc, user, what, limit, day, run_error)

        wait = max(1, math.ceil(day.end - now))
        remaining = None if limit is None else max(limit - int(used), 0)
        if self.ahead_margin > 0 and cap is None:  # a platform-wide cap is shared: always decided first
            left = self._left
            if len(left) >= 100_000:  # bounded: forget everyone (they decide before the call once more)
                left.clear()
            t, n = time.monotonic(), remaining if remaining is not None else 1 << 62
            seen = left.get(keys[0])
            # replies of concurrent decisions may land out of order: a count above the one seen
            # lately is not taken until that one is too old (a raised limit shows within a second)
            if seen is None or n < seen[1] or t - seen[0] > self.ahead_seconds:
                left[keys[0]] = (t, n)
        if code == 0:
            self.stats.counted += 1
            msg = (f"{remaining} of {limit} {'plan' if entitled else 'free'} calls to {what} left today"
                   if limit is not None
                   else f"calls to {what} are not limited per user")
            return Decision(True, "counted", limit, remaining, day.reset_at, None, msg, True, int(used),
                            run_error)
        self.stats.refused += 1
        reset = day.reset_at.strftime("%Y-%m-%d %H:%M")
        if code == 1 and limit == 0:
            msg = (f"{what} offers no free calls on the platform key; add your own API key to call it "
                   f"(policies are re-read at {reset} {self.zone} at the latest).")
            return Decision(False, "user_limit", limit, 0, day.reset_at, wait, msg, False, int(used),
                            run_error)
        if code == 1:
            msg = (f"You have used all {limit} {'plan' if entitled else 'free'} calls to {what} for today on the "
                   f"platform key. "
                   f"The quota resets at {reset} {self.zone} (in {_fmt_wait(wait)}); "
                   f"add your own API key to keep calling it without limits.")
            return Decision(False, "user_limit", limit, 0, day.reset_at, wait, msg, False, int(used),
                            run_error)
        msg = (f"{what} has reached its platform-wide daily limit of {cap} calls on the platform key. "
               f"It resets at {reset} {self.zone} (in {_fmt_wait(wait)}); "
               f"add your own API key to keep calling it.")
        return Decision(False, "global_cap", limit, remaining, day.reset_at, wait, msg, False, int(used),
                        run_error)

    def _unavailable(self, exc: BaseException, user: str, what: str, limit: int | None, day: _Day,
                     run_error: str | None) -> Decision:
        self.stats.redis_errors += 1
        if self._errors_metric is not None:
            self._errors_metric.add(1, {"fail_closed": self.fail_closed})
        log.error("quota_redis_unavailable fail_closed=%s user=%s %s error=%s", self.fail_closed, user, what,
                  type(exc).__name__ + (f": {exc}" if str(exc) else ""))
        if self.fail_closed:
            self.stats.refused += 1
            return Decision(False, "unavailable", limit, None, day.reset_at, self.unavailable_retry_after,
                            f"the quota service is unavailable, so calls to {what} on the platform key are "
                            f"paused; retry in {self.unavailable_retry_after} s or use your own API key",
                            run_context_error=run_error)
        return Decision(True, "unavailable", limit, None, day.reset_at, None,
                        f"the quota service is unavailable; the call to {what} was let through uncounted",
                        run_context_error=run_error)

    # -- reading counters (usage API) --------------------------------------------------------
    async def used_today(self, user_id: UUID | str, subjects: Sequence[tuple[str, str]]) -> list[int]:
        """The caller's count today for each (kind, id), in one MGET."""
        if not subjects:
            return []
        tag = self.day().tag
        keys = [self.counter_key(k, i, tag, str(user_id)) for k, i in subjects]
        values = await self.redis.mget(keys)
        return [int(v) if v is not None else 0 for v in values]

    async def global_used_today(self, slug: str) -> int:
        v = await self.redis.get(self.cap_key("server", slug, self.day().tag))
        return int(v) if v is not None else 0


async def open_quota_client(redis: Redis, settings: Any,
                            clock: Callable[[], float] | None = None) -> QuotaClient:
    """What the gateway calls in its lifespan: a client on the service's live policies
    (``settings`` is :class:`wemcp.quota.config.QuotaSettings`). Close it with ``await client.aclose()``."""
    cache = RedisPolicyCache(redis, settings.default_limits(), max_age=settings.policy_max_age_seconds)
    await cache.start()
    return QuotaClient.from_settings(redis, cache, settings, clock)
