"""Several gateway replicas behind any load balancer: every MCP request that belongs to state one
replica holds is *routed by its id* to that replica (docs/scaling.md).

What lives in one replica's memory, and so has an owner:

- a 2025 client session (``Mcp-Session-Id``): its GET stream, its event log for ``Last-Event-ID``,
  its pooled upstream sessions and the server-to-client requests waiting for its answers;
- a legacy SSE session (``/mcp/<slug>/sse`` with ``/mcp/<slug>/messages?session_id=...``): the
  stream is held open by the replica that took the GET;
- a parked call of a 2026 client (the gateway's ``requestState`` token): the upstream call stays
  open in the replica that parked it.

Each replica picks a random id (8 hex digits) at start and mints those ids with it as a prefix
(``<replica>.<random>``; ``wemcp-rs.<replica>.<random>`` for ``requestState``). It announces the URL
the other replicas reach it at (``WEMCP_GATEWAY_PEER_URL``, on Kubernetes the pod's IP) in Redis
(``wemcp:gateway:replica:<id>``, renewed every third of ``PEER_TTL_SECONDS``). A request on ``/mcp/…``
whose session id or ``requestState`` names another replica is forwarded there whole — the client's own
headers and body, the answer streamed back — and the owner checks the caller's credentials as for any
request (nothing is trusted from the forwarding replica). A forwarded request carries
``X-WeMcp-Replica-Hop`` and is never forwarded again (no loops). An owner that is gone (no
announcement, or it does not answer) leaves the request to this replica, which answers as for any
unknown session (404: a 2025 client initializes again) or unknown ``requestState``.

The alternative — the sessions themselves in Redis — would move open streams, queues and upstream
connections between processes; forwarding keeps one owner per session and costs one extra loopback
hop only for requests that land on a replica that does not own them. Quotas need neither: their
counters are already in Redis (wemcp.quota.client).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from typing import Any

import structlog

from wemcp.gateway.h1client import H1Client, H1Error

log = structlog.get_logger("wemcp.gateway.replicas")

KEY = "wemcp:gateway:replica:"
HOP = b"x-wemcp-replica-hop"
STATE_PREFIX = b"wemcp-rs."  # relay.STATE_PREFIX, as bytes
_ID = re.compile(r"^[0-9a-f]{8}$")
_STATE = re.compile(rb'"requestState"\s*:\s*"wemcp-rs\.([0-9a-f]{8})\.')
# not forwarded either way: hop-by-hop headers and the length the HTTP client sets itself (Host is kept:
# the owner checks it, and Origin against it, as for the client's own request)
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                         b"proxy-connection", b"content-length"})
_RESP_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"})


MAX_PEER_CONNECTIONS = 4096  # to the other replicas: each open forwarded stream holds one


class HeaderPairs(list[tuple[str, str]]):
    """A request's headers as sent, repeated names included (``H1Client.request`` reads ``items()``)."""

    def items(self) -> list[tuple[str, str]]:
        return self


def owner_of(token: str) -> str | None:
    """The replica id a minted id starts with (None: not one of ours, e.g. from a single replica)."""
    rid, dot, _ = token.partition(".")
    return rid if dot and _ID.match(rid) else None


class Replicas:
    """This replica's id, its announcement, and the lookup of the others' (cached a few seconds)."""

    def __init__(self, redis: Any, peer_url: str | None, *, ttl: float = 15.0, timeout: float = 2.0,
                 read_timeout: float = 3600.0, max_body: int = 4 * 1024 * 1024, body_timeout: float = 10.0) -> None:
        self.id = secrets.token_hex(4)
        self.redis, self.peer_url = redis, peer_url.rstrip("/") if peer_url else None
        self.ttl, self.timeout, self.read_timeout = ttl, timeout, read_timeout
        self.max_body, self.body_timeout = max_body, body_timeout
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._http: H1Client | None = None  # the gateway's own client (h1client.py), as to upstreams
        self.forwarded = 0  # requests sent to their owner (tests and the bench read it)

    @property
    def prefix(self) -> str:
        """What this replica's ids start with."""
        return f"{self.id}."

    @property
    def enabled(self) -> bool:
        return self.peer_url is not None and self.redis is not None

    async def start(self) -> None:
        if not self.enabled:
            return
        await self._announce()
        self._task = asyncio.create_task(self._renew(), name="gateway-replica-announce")
        # the owner's answer may be a long SSE stream: ``read_timeout`` bounds the wait for its headers
        # and then each silence between chunks, never the whole stream
        self._http = H1Client(max_connections=MAX_PEER_CONNECTIONS, connect_timeout=self.timeout,
                              timeout=self.read_timeout)
        log.info("gateway_replica_announced", replica=self.id, peer_url=self.peer_url)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.enabled:
            with contextlib.suppress(Exception):
                await self.redis.delete(KEY + self.id)  # the others stop forwarding at once
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _announce(self) -> None:
        await self.redis.set(KEY + self.id, self.peer_url or "", ex=max(1, int(self.ttl)))

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self._announce()
            except Exception as exc:  # Redis away: the announcement lapses, requests stay local
                log.warning("gateway_replica_announce_failed", error=str(exc)[:200])

    async def peer(self, rid: str) -> str | None:
        now = time.monotonic()
        hit = self._cache.get(rid)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            raw = await self.redis.get(KEY + rid)
        except Exception:
            return None
        url = (raw.decode() if isinstance(raw, bytes) else raw) or None
        self._cache[rid] = (now + (5.0 if url else 1.0), url)
        return url

    def forget(self, rid: str) -> None:
        self._cache.pop(rid, None)

    # -- forwarding ------------------------------------------------------------------------------
    async def forward(self, url: str, scope: dict[str, Any], body: bytes, receive: Any, send: Any) -> bool:
        """The request to its owner at ``url``, the answer streamed back. False (nothing sent to the
        client yet): the owner could not be reached, the caller handles the request itself."""
        assert self._http is not None
        qs = scope.get("query_string", b"")
        target = url + scope.get("raw_path", scope["path"].encode()).decode("latin-1") + ("?" + qs.decode("latin-1")
                                                                                         if qs else "")
        headers = HeaderPairs((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                              if k not in _HOP_BY_HOP)
        headers.append((HOP.decode(), self.id))
        try:
            resp = await self._http.request(scope["method"], target, body, headers)
        except (H1Error, TimeoutError, OSError) as exc:
            log.warning("gateway_replica_unreachable", url=url, error=str(exc)[:200])
            return False
        self.forwarded += 1
        try:
            await relay_answer(resp, _RESP_DROP, receive, send, (H1Error, TimeoutError, OSError))
        finally:
            resp.release()
        return True


class ReplicaRouter:
    """ASGI wrapper outside the gateway's app: requests on ``/mcp/…`` whose session id or
    ``requestState`` belongs to another replica go to it (see the module notes); everything else
    passes through untouched. ``replicas`` is looked up on the app's runtime (set at start)."""

    def __init__(self, app: Any, inner: Any) -> None:
        self.app, self.inner = app, inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/mcp/"):
            await self.inner(scope, receive, send)
            return
        replicas: Replicas | None = self.app.state.runtime.extras.get("replicas")
        if replicas is None or not replicas.enabled:
            await self.inner(scope, receive, send)
            return
        rid: str | None = None
        hop = False
        for k, v in scope["headers"]:
            if k == b"mcp-session-id":
                rid = owner_of(v.decode("latin-1"))
            elif k == HOP:
                hop = True
        if hop:
            await self.inner(scope, receive, send)
            return
        if rid is None and scope["path"].rstrip("/").endswith("/messages"):
            qs = scope.get("query_string", b"").decode("latin-1")
            sid = next((p[11:] for p in qs.split("&") if p.startswith("session_id=")), "")
            rid = owner_of(sid)
        body: bytes | None = None  # read here (then replayed to the app), or still unread
        if rid is None:
            if scope["method"] != "POST":
                await self.inner(scope, receive, send)
                return
            # a 2026 client's retry of a parked call: the requestState in its body names the replica
            try:
                body = await self._body(receive, replicas)
            except _TooMuch as exc:  # too large or too slow for us: the app answers it as usual
                await self.inner(scope, replay(exc.body, receive, more=True), send)
                return
            m = _STATE.search(body) if STATE_PREFIX in body else None
            rid = m.group(1).decode() if m else None
        if rid is None or rid == replicas.id:
            await self.inner(scope, receive if body is None else replay(body, receive), send)
            return
        url = await replicas.peer(rid)
        if url is not None:
            if body is None:
                try:
                    body = await self._body(receive, replicas)
                except _TooMuch as exc:
                    await self.inner(scope, replay(exc.body, receive, more=True), send)
                    return
            if await replicas.forward(url, scope, body, receive, send):
                return
            replicas.forget(rid)
        # the owner is gone: answered here, as any unknown session or requestState
        await self.inner(scope, receive if body is None else replay(body, receive), send)

    @staticmethod
    async def _body(receive: Any, replicas: Replicas) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(replicas.body_timeout):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        raise _TooMuch(b"".join(chunks))
                    chunk = msg.get("body", b"")
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > replicas.max_body and msg.get("more_body"):
                        raise _TooMuch(b"".join(chunks))
                    if not msg.get("more_body"):
                        return b"".join(chunks)
        except TimeoutError:
            raise _TooMuch(b"".join(chunks)) from None


async def relay_answer(resp: Any, drop: frozenset[str], receive: Any, send: Any,
                       broken: tuple[type[BaseException], ...]) -> None:
    """Stream an HTTP answer (``resp``: ``status``, ``headers``, ``content.iter_any()``, as h1client's
    and aiohttp's responses have them) to the ASGI ``send``, without the headers in ``drop``
    (lowercase), each chunk as it comes. The client leaving (``http.disconnect``) ends the stream, and
    so the upstream's; an upstream that breaks (``broken``) ends the answer where it is."""
    out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
           if k.lower() not in drop]
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                gone.set()
                return

    watcher = asyncio.create_task(watch())
    try:
        await send({"type": "http.response.start", "status": resp.status, "headers": out})
        async for chunk in resp.content.iter_any():
            if gone.is_set():
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except broken:
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()


class _TooMuch(Exception):
    def __init__(self, body: bytes) -> None:
        self.body = body


def replay(body: bytes, receive: Any, more: bool = False) -> Any:
    """``receive`` that first hands back the body already read (then, with ``more``, the rest); also the
    test doubles' (``wemcp.testkit.agents``)."""
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return again


async def open_replicas(runtime: Any) -> None:
    """On start, after the MCP router: this replica's id on the ids it mints, its announcement."""
    s = runtime.extras["gateway"].settings
    replicas = Replicas(runtime.redis, s.peer_url, ttl=s.peer_ttl_seconds, timeout=s.peer_timeout_seconds,
                        read_timeout=max(s.mcp_upstream_timeout_seconds, 3600.0), max_body=s.mcp_max_body_bytes,
                        body_timeout=s.mcp_body_timeout_seconds)
    mcp = runtime.extras["mcp"]
    if replicas.enabled:
        mcp.router.sid_prefix = replicas.prefix
        mcp.router.relay.state_tag = replicas.prefix
    await replicas.start()
    runtime.extras["replicas"] = replicas


async def close_replicas(runtime: Any) -> None:
    replicas: Replicas | None = runtime.extras.pop("replicas", None)
    if replicas is not None:
        await replicas.stop()
