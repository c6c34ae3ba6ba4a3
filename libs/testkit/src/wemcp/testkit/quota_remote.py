"""Quota decisions over NATS request/reply: a :class:`DecisionResponder` answers on a subject with an
in-process :class:`~wemcp.quota.client.QuotaClient`, and :class:`NatsQuotaClient` asks it.

Test support, not production: every production caller (gateway, agents) decides in-process on the
shared Redis, and ``bench/ratelimit_decide.py`` measured this path as slower (a NATS round trip and a
JSON encode/decode on both sides around the same Lua script). The ratelimit service used to answer on
``ratelimit.decide`` although nothing asked; a subscription that anyone on the bus could use to spend
any user's quota is gone with it. The benchmark and the tests start a responder of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from wemcp.quota.client import Decision, InvalidSubject, QuotaClient

log = logging.getLogger("wemcp.testkit.quota_remote")
QUEUE_GROUP = "ratelimit"


class DecisionResponder:
    """Answers ``{"user_id", "kind", "id", "key_source", "run"}`` with a decision (queue group, so
    several responders share the load)."""

    def __init__(self, nc: NatsClient, quota: QuotaClient, subject: str) -> None:
        self.nc, self.quota, self.subject = nc, quota, subject
        self.sub: Subscription | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(self.subject, queue=QUEUE_GROUP, cb=self._dispatch)

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()
            self.sub = None
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _dispatch(self, msg: Msg) -> None:
        # nats-py runs a subscription's callbacks one at a time; a decision waits on Redis, so answer
        # each request in its own task or the responder serialises every caller behind one round trip.
        task = asyncio.get_running_loop().create_task(self._on_request(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _on_request(self, msg: Msg) -> None:
        try:
            req = json.loads(msg.data)
            decision = await self.quota.decide(str(UUID(str(req["user_id"]))), req["kind"], req["id"],
                                               req.get("key_source", "system"), req.get("run"))
            body: dict[str, Any] = decision.to_wire()
        except (ValueError, KeyError, TypeError, InvalidSubject) as exc:
            body = {"error": f"bad decision request: {exc}"}
        except Exception as exc:  # never leave a caller waiting for its timeout
            log.exception("decision_failed")
            body = {"error": f"decision failed: {type(exc).__name__}"}
        if msg.reply:
            await msg.respond(json.dumps(body, separators=(",", ":")).encode())


class NatsQuotaClient:
    """Same ``decide`` as :class:`QuotaClient`, answered over NATS by a :class:`DecisionResponder`."""

    def __init__(self, nc: NatsClient, subject: str = "ratelimit.decide", *, timeout: float = 0.5,
                 fail_closed: bool = True, zone: str = "Asia/Shanghai",
                 unavailable_retry_after: int = 5) -> None:
        self.nc, self.subject, self.timeout, self.fail_closed = nc, subject, timeout, fail_closed
        self.zone, self.unavailable_retry_after = ZoneInfo(zone), unavailable_retry_after
        self.errors = 0

    async def decide(self, user_id: UUID | str, subject_kind: str, subject_id: str,
                     key_source: str = "system", in_agent_run_token: str | None = None) -> Decision:
        payload = json.dumps({"user_id": str(user_id), "kind": subject_kind, "id": subject_id,
                              "key_source": key_source, "run": in_agent_run_token}, separators=(",", ":"))
        try:
            msg = await self.nc.request(self.subject, payload.encode(), timeout=self.timeout)
        except Exception as exc:  # timeout, no responders, connection closed
            return self._unavailable(exc, subject_kind, subject_id)
        body = json.loads(msg.data)
        if "error" in body:
            raise InvalidSubject(body["error"])
        return Decision.from_wire(body)

    def _unavailable(self, exc: BaseException, kind: str, sid: str) -> Decision:
        self.errors += 1
        log.error("quota_nats_unavailable error=%s", type(exc).__name__)
        local = datetime.fromtimestamp(time.time(), UTC).astimezone(self.zone)
        reset = datetime.combine(local.date() + timedelta(days=1), dtime(0), self.zone)
        what = f"{kind} {sid!r}"
        if self.fail_closed:
            return Decision(False, "unavailable", None, None, reset, self.unavailable_retry_after,
                            f"the quota service is unavailable, so calls to {what} on the platform key are "
                            f"paused; retry in {self.unavailable_retry_after} s or use your own API key")
        return Decision(True, "unavailable", None, None, reset, None,
                        f"the quota service is unavailable; the call to {what} was let through uncounted")
