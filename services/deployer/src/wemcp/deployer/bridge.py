"""The local backend's stdio → Streamable HTTP (and legacy SSE) bridge, on loopback.

``POST /s/{slug}/mcp`` speaks Streamable HTTP in both protocol eras: the 2025 revisions
(``initialize`` → ``Mcp-Session-Id``) and 2026-07-28 (stateless; ``server/discover``). ``GET
/s/{slug}/sse`` + ``POST /s/{slug}/messages`` is the 2024-11-05 SSE transport.

One child per credential set and client capabilities: a caller's values for the server's declared
variables arrive as ``X-WeMcp-Env-<NAME>`` headers (the gateway fills them from the vault; logs
redact that prefix); children are keyed by a hash of those values (and by the sampling/elicitation/
roots capabilities of the session's ``initialize``, which the child is initialized with), so callers
with different secrets never share a process. What a child says during a call reaches that
call's caller (child.py): a 2025 session's request is answered as SSE once the server speaks
before its reply, and the client's answers come back on POSTs of that session. What it says outside
any call (``child.OUTSIDE_CALLS``: list_changed, resources/updated) goes to the ``GET`` streams of
the sessions on that child (resources/updated only to those that subscribed to its URI).
A 2026-07-28 call whose child asks something is answered with an ``InputRequiredResult`` and the
child's call parked until the client's retry (``Parked``: multi round-trip, the revision's only way
for a server to ask); a 2025 session's ``notifications/cancelled`` reaches the child under the id it
saw (``StdioChild.cancel``).
Children are started on demand, stopped when idle (scale to zero, :mod:`wemcp.deployer.idle`:
no call in flight and no open stream for the server's idle time; the sessions opened on a stopped
child are forgotten, so a stale ``Mcp-Session-Id`` gets 404 and the client initialises again; the
next call starts a fresh child) and restarted after a crash with backoff.

Every ``/s/{slug}/...`` request must carry the platform's credential for that slug
(``X-WeMcp-Assertion`` signed with the key derived for ``bridge:<slug>``, wemcp.common.trust), or 401:
any other local process — a hosted server's child included — gets nothing from the bridge.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from wemcp.common import sse
from wemcp.common.http import SERVER_KEEP_ALIVE_SECONDS, http_protocol
from wemcp.common.logging import get_logger
from wemcp.common.trust import HEADER_ASSERTION_RAW, BridgeGuard, KeyRing, environment_ring
from wemcp.deployer import sandbox
from wemcp.deployer.child import ChildError, Command, EgressHook, StdioChild
from wemcp.deployer.egress import EgressProxy
from wemcp.deployer.idle import IdlePolicy

log = get_logger("wemcp.deployer.bridge")
ENV_HEADER = "x-wemcp-env-"
MODERN = "2026-07-28"
VERSION_META = "io.modelcontextprotocol/protocolVersion"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
ENVELOPE_META = (VERSION_META, "io.modelcontextprotocol/clientCapabilities", "io.modelcontextprotocol/clientInfo",
                 "io.modelcontextprotocol/logLevel")
STREAM_BACKLOG = 256  # messages waiting on a session's GET stream; more are dropped
CACHEABLE = {"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read",
             "server/discover"}




class UidPool:
    """Sandbox uids, leased machine-wide with one ``flock`` per uid: two deployer processes on the same
    host never hand one uid to two children (two children sharing a uid could read each other's
    ``/proc/<pid>/environ``, i.e. another user's secrets). A lease dies with its holder's process."""

    def __init__(self, base: int, size: int, lock_dir: Path | None = None) -> None:
        self._free = collections.deque(range(base, base + size))
        self._held: dict[int, int] = {}
        self.lock_dir = lock_dir or Path(tempfile.gettempdir()) / "wemcp-sandbox-uids"

    def acquire(self) -> int:
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for _ in range(len(self._free)):
            uid = self._free.popleft()
            fd = os.open(self.lock_dir / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another deployer holds it
                os.close(fd)
                self._free.append(uid)
                continue
            self._held[uid] = fd
            return uid
        raise RuntimeError("no free sandbox uid")

    def release(self, uid: int) -> None:
        fd = self._held.pop(uid, None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock
            self._free.append(uid)

class Backoff(Exception):
    def __init__(self, retry_after: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class Hosted:
    slug: str
    make_command: Callable[[dict[str, str]], Command]  # credential values → command
    allowed_env: set[str]
    children: dict[str, StdioChild] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=lambda: collections.defaultdict(asyncio.Lock))
    crashes: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=20))
    last_tail: str = ""
    network: bool = False  # its children reach the internet through the egress proxy only
    idle_seconds: float | None = None  # the deployment's own idle time (None: the bridge's default)


@dataclass
class Session:
    slug: str
    key: str
    env: dict[str, str]
    queue: asyncio.Queue[dict[str, Any]] | None = None  # legacy SSE only
    last_used: float = field(default_factory=time.monotonic)
    caps: dict[str, Any] = field(default_factory=dict)  # what the client may be asked (client_caps)
    stream: asyncio.Queue[dict[str, Any]] | None = None  # its open GET stream (messages outside calls)
    subscriptions: set[str] = field(default_factory=set)  # resource URIs it subscribed to


ASKING = ("sampling", "elicitation", "roots")


def client_caps(params: Any) -> dict[str, Any]:
    """The capabilities of an ``initialize`` that let a server ask the client something: its child is
    started with them (so a server asks only clients that can answer, and children are shared only
    by clients that declared the same)."""
    caps = params.get("capabilities") if isinstance(params, dict) else None
    if not isinstance(caps, dict):
        return {}
    return {k: v for k, v in caps.items() if k in ASKING and isinstance(v, dict)}


class _EmbeddedServer(uvicorn.Server):
    """The bridge's uvicorn inside the deployer: the host process owns SIGINT/SIGTERM. (uvicorn >= 0.29
    installs its handlers in ``capture_signals`` around ``serve``, in the main thread; the old
    ``install_signal_handlers`` hook is gone.)"""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Bridge:
    def __init__(self, *, caps: sandbox.Capabilities, limits: sandbox.Limits, run_dir: Path, host: str = "127.0.0.1",
                 port: int = 0, public_url: str | None = None, idle_seconds: float = 600.0,
                 reap_interval: float = 15.0, start_timeout: float = 60.0, call_timeout: float = 120.0,
                 max_children: int = 16, uid_base: int = 200000, keys: KeyRing | None = None,
                 egress: EgressProxy | None = None, egress_python: str = "/usr/bin/python3",
                 egress_preload: str = "", max_idle_seconds: float = 86400.0) -> None:
        self.caps = caps
        self.egress = egress  # None: no server here gets network
        self.egress_python, self.egress_preload = egress_python, egress_preload
        self.guard = BridgeGuard(keys if keys is not None else environment_ring())
        self.limits = limits
        self.run_dir = run_dir
        self.host, self.port = host, port
        self.public_url = public_url
        self.idle_seconds = idle_seconds
        self.idle = IdlePolicy(idle_seconds, max_seconds=max(max_idle_seconds, idle_seconds))
        self.reap_interval = reap_interval
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self.max_children = max_children
        self.uid_base = uid_base
        self.hosted: dict[str, Hosted] = {}
        self.sessions: dict[str, Session] = {}
        self._uids = UidPool(uid_base, 60000)
        self._server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._inflight: set[asyncio.Future[Any]] = set()
        self.parked: dict[str, Parked] = {}  # 2026-07-28 calls waiting for their client's answers, by token
        self.routes = Starlette(routes=[
            Route("/s/{slug}/mcp", self._mcp, methods=["GET", "DELETE"]),
            Route("/s/{slug}/sse", self._sse, methods=["GET"]),
            Route("/s/{slug}/messages", self._messages, methods=["POST"]),
            Route("/healthz", lambda r: JSONResponse({"status": "ok", "servers": len(self.hosted)})),
        ])
        self.app = self._asgi

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``POST /s/{slug}/mcp`` (every call) is served here as raw ASGI, the same steps as
        :meth:`_mcp` without the framework's routing, request and response objects (a large share of
        the bridge's CPU per call); everything else goes to the Starlette routes."""
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/s/"):
                slug = path[3:].split("/", 1)[0]
                token = next((v.decode("latin-1") for k, v in scope["headers"] if k == HEADER_ASSERTION_RAW), None)
                refused = self.guard.check(slug, token)
                if refused is not None:
                    await JSONResponse({"error": refused}, status_code=401)(scope, receive, send)
                    return
                if scope["method"] == "POST" and path.endswith("/mcp") and path.count("/") == 3:
                    await self._post(scope, receive, send, slug)
                    return
        await self.routes(scope, receive, send)

    async def _post(self, scope: dict[str, Any], receive: Any, send: Any, slug: str) -> None:
        async def reply(status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
            body = b"" if payload is None else _dumps(payload)
            h = [(b"content-length", str(len(body)).encode())]
            if payload is not None:
                h.append((b"content-type", b"application/json"))
            await send({"type": "http.response.start", "status": status, "headers": h + (headers or [])})
            await send({"type": "http.response.body", "body": body})

        hosted = self.hosted.get(slug)
        if hosted is None:
            await reply(404, {"error": f"no hosted server {slug!r}"})
            return
        sid = None
        caller = ""
        env: dict[str, str] = {}
        try:
            for k, v in scope["headers"]:
                if k == b"mcp-session-id":
                    sid = v.decode("latin-1")
                elif k == b"x-wemcp-caller":  # who the gateway serves (with its credential, checked above)
                    caller = v.decode("latin-1")
                elif k.startswith(b"x-wemcp-env-"):
                    name = k[12:].decode("latin-1").upper().replace("-", "_")
                    if name not in hosted.allowed_env:
                        raise ValueError(f"{name} is not a variable this server declares")
                    env[name] = v.decode("latin-1")
            chunks = []
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = _loads(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except ValueError as exc:
            await reply(400, _error(None, -32700, f"bad request: {exc}"))
            return
        session: Session | None = None
        if sid:
            session = self.sessions.get(sid)
            if session is None or session.slug != slug:
                await reply(404, _error(None, -32001, "unknown or expired session"))
                return
            if env and credential_key(env) != session.key:
                await reply(400, _error(None, -32600, "credentials differ from the session's"))
                return
            env = session.env
            session.last_used = time.monotonic()
        messages = body if isinstance(body, list) else [body]
        if not messages or not all(isinstance(m, dict) for m in messages):
            await reply(400, _error(None, -32600, "invalid JSON-RPC message"))
            return
        caps = session.caps if session is not None else {}
        init = next((m for m in messages if m.get("method") == "initialize"), None) if not sid else None
        if init is not None:
            caps = client_caps(init.get("params"))
        if session is not None:
            for m in messages:  # the client's answers to what the server asked during a call
                if "method" not in m and "id" in m:
                    await self.answer(slug, env, caps, m, sid or "")
                elif m.get("method") == "notifications/cancelled":  # to the child, under its own id
                    await self.cancel(slug, env, caps, m, sid or "")
                elif m.get("method") in ("resources/subscribe", "resources/unsubscribe"):
                    uri = m.get("params", {}).get("uri") if isinstance(m.get("params"), dict) else None
                    if isinstance(uri, str):  # whose GET stream hears of that resource's updates
                        if m["method"] == "resources/subscribe":
                            session.subscriptions.add(uri)
                        else:
                            session.subscriptions.discard(uri)
        one_call = session is not None and len(messages) == 1 and "id" in messages[0] and \
            messages[0].get("method") not in (None, "initialize", "ping") and \
            b"text/event-stream" in next((v for k, v in scope["headers"] if k == b"accept"), b"")
        if not one_call and session is None and len(messages) == 1 and messages[0].get("method") in RELAYED \
                and _talks(messages[0]) and \
                b"text/event-stream" in next((v for k, v in scope["headers"] if k == b"accept"), b""):
            # a 2026-07-28 call whose client takes progress or log messages: a stream, if the server talks
            one_call = True
        if one_call:  # the server may talk before it answers: a stream, if it does
            await self._call_streamed(send, slug, env, caps, messages[0], sid, caller)
            return
        if len(messages) == 1:
            one = await self.handle(slug, env, messages[0], caps=caps, session=sid, caller=caller)
            replies = [one] if one is not None else []
        else:
            replies = [r for r in await asyncio.gather(*(self.handle(slug, env, m, caps=caps, session=sid,
                                                                     caller=caller)
                                                         for m in messages)) if r is not None]
        headers = []
        if init is not None:
            new = uuid.uuid4().hex
            self.sessions[new] = Session(slug, credential_key(env), env, caps=caps)
            headers.append((b"mcp-session-id", new.encode()))
        if not replies:
            await reply(202, None, headers)
            return
        await reply(200, replies if isinstance(body, list) else replies[0], headers)

    async def _call_streamed(self, send: Any, slug: str, env: dict[str, str], caps: dict[str, Any],
                             msg: dict[str, Any], sid: str | None, caller: str = "") -> None:
        """One request of a 2025 session whose client accepts SSE: plain JSON when the server says
        nothing before its reply, an SSE stream (its notifications and requests, then the reply) as
        soon as it does."""
        side: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        task = asyncio.ensure_future(self.handle(slug, env, msg, caps=caps, session=sid, side=side, caller=caller))
        started = False

        async def event(m: dict[str, Any]) -> None:
            nonlocal started
            if not started:
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no")]})
            await send({"type": "http.response.body", "body": sse.encode(_dumps(m)),
                        "more_body": True})

        try:
            while not task.done():
                getter = asyncio.ensure_future(side.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    await event(getter.result())
                else:
                    getter.cancel()
            while not side.empty():  # what the server said just before its reply
                await event(side.get_nowait())
            answer = task.result() or _error(msg.get("id"), -32603, "no reply")
        except OSError:  # the client went away; the call is cancelled on the child
            task.cancel()
            return
        if started:
            await event(answer)
            await send({"type": "http.response.body", "body": b""})
            return
        body = _dumps(answer)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def cancel(self, slug: str, env: dict[str, str], caps: dict[str, Any], msg: dict[str, Any],
                     sid: str) -> None:
        """A session's ``notifications/cancelled``: to the child running that session's request."""
        hosted = self.hosted.get(slug)
        child = hosted.children.get(child_key(env, caps)) if hosted is not None else None
        raw = msg.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if child is not None and not await child.cancel(params.get("requestId"), sid, params.get("reason")):
            log.info("bridge_cancel_unmatched", slug=slug)

    async def answer(self, slug: str, env: dict[str, str], caps: dict[str, Any], msg: dict[str, Any],
                     sid: str) -> None:
        """A client's answer to the server's request, to the child that asked (only the asked session's)."""
        hosted = self.hosted.get(slug)
        child = hosted.children.get(child_key(env, caps)) if hosted is not None else None
        if child is not None and not await child.answer(msg.get("id"), msg, sid):
            log.info("bridge_answer_dropped", slug=slug)

    # ------------------------------------------------------------------ process lifecycle
    async def start(self) -> None:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
        # accepted sockets inherit it. Without it a reply written in two parts (headers, body)
        # waits for the client's delayed ACK: ~40 ms per call on a keep-alive connection.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(512)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        # the platform's server keep-alive, longer than the gateway keeps an idle upstream connection:
        # the gateway never writes a call on a connection the bridge is closing at that instant
        config = uvicorn.Config(self.app, interface="asgi3", lifespan="off", log_config=None, access_log=False,
                                server_header=False, timeout_graceful_shutdown=2, http=http_protocol(),
                                timeout_keep_alive=SERVER_KEEP_ALIVE_SECONDS)
        self._server = _EmbeddedServer(config)
        self._tasks.append(asyncio.create_task(self._server.serve(sockets=[sock])))
        self._tasks.append(asyncio.create_task(self._reaper()))
        for _ in range(200):
            if self._server.started:
                break
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for slug in list(self.hosted):
            await self.unregister(slug)
        if self._server is not None:
            self._server.should_exit = True
        self._tasks[1].cancel() if len(self._tasks) > 1 else None
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, 5)
        if self.egress is not None:
            await self.egress.close()

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def endpoint(self, slug: str, transport: str = "streamable-http") -> str:
        return f"{self.base_url}/s/{slug}/" + ("mcp" if transport == "streamable-http" else "sse")

    def register(self, hosted: Hosted) -> None:
        old = self.hosted.get(hosted.slug)
        if old is not None:
            hosted.children, hosted.crashes = old.children, old.crashes
        self.hosted[hosted.slug] = hosted

    async def unregister(self, slug: str) -> None:
        hosted = self.hosted.pop(slug, None)
        for sid in [k for k, s in self.sessions.items() if s.slug == slug]:
            self.sessions.pop(sid, None)
        self.idle.forget(slug)
        if hosted is not None:
            await self.scale_to_zero(hosted)

    async def scale_to_zero(self, hosted: Hosted) -> None:
        children = list(hosted.children.items())
        hosted.children.clear()
        for key, child in children:
            self._forget_sessions(hosted.slug, key)
            await self._stop_child(child)

    def _forget_sessions(self, slug: str, key: str) -> None:
        """The Streamable HTTP sessions opened on a stopped child: their next request gets 404."""
        for sid in [k for k, s in self.sessions.items()
                    if s.slug == slug and child_key(s.env, s.caps) == key and s.queue is None]:
            gone = self.sessions.pop(sid, None)
            if gone is not None and gone.stream is not None:
                with contextlib.suppress(asyncio.QueueFull):
                    gone.stream.put_nowait({})  # its GET stream ends too

    async def _stop_child(self, child: StdioChild) -> None:
        await child.stop()
        if child.uid is not None:
            self._uids.release(child.uid)

    async def child_for(self, slug: str, env: dict[str, str], caps: dict[str, Any] | None = None) -> StdioChild:
        """The child of these credential values and client capabilities (started on demand)."""
        hosted = self.hosted.get(slug)
        if hosted is None:
            raise KeyError(slug)
        key = child_key(env, caps)
        child = hosted.children.get(key)
        if child is not None and child.alive:
            return child
        async with hosted.locks[key]:
            child = hosted.children.get(key)
            if child is not None and child.alive:
                return child
            now = time.monotonic()
            if child is not None:  # it died on its own: a crash
                hosted.crashes.append(now)
                hosted.last_tail = child.tail()
                hosted.children.pop(key, None)
                await self._stop_child(child)
            recent = [t for t in hosted.crashes if now - t < 120]
            if len(recent) >= 2:
                wait = min(0.5 * 2 ** (len(recent) - 2), 60.0)
                if now - recent[-1] < wait:
                    raise Backoff(wait - (now - recent[-1]), "the server keeps crashing; restarting with backoff")
            if len(hosted.children) >= self.max_children:
                raise Backoff(5.0, "too many credential sets are active on this server")
            hook = None
            if hosted.network:
                if self.egress is None:
                    raise ChildError("this deployer has no egress proxy: servers with network cannot run here")
                hook = EgressHook(self.egress, slug, self.egress_python, self.egress_preload)
            uid = self._uids.acquire() if self.caps.own_uid else None
            child = StdioChild(hosted.make_command(env), caps=self.caps, limits=self.limits, uid=uid,
                               run_dir=self.run_dir / f"{slug}-{uuid.uuid4().hex[:8]}",
                               secrets=list(env.values()),  # all the caller gave (not only isSecret ones)
                               start_timeout=self.start_timeout, egress=hook, client_caps=caps)
            try:
                await child.start()
            except ChildError as exc:
                hosted.crashes.append(time.monotonic())
                hosted.last_tail = exc.tail
                if uid is not None:
                    self._uids.release(uid)
                raise
            child.outside = lambda msg, slug=slug, key=key: self._outside(slug, key, msg)
            hosted.children[key] = child
            log.info("child_started", slug=slug, pid=child.proc.pid if child.proc else None,
                     children=len(hosted.children))
            return child

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            await self.reap_once()

    async def reap_once(self) -> int:
        now = time.monotonic()
        stopped = 0
        for hosted in list(self.hosted.values()):
            for key, child in list(hosted.children.items()):
                # streams hold the children of their credential set (whatever capabilities each has)
                if self.idle.is_idle(hosted.slug, key.partition(":")[0], child, hosted.idle_seconds, now):
                    hosted.children.pop(key, None)
                    self._forget_sessions(hosted.slug, key)
                    await self._stop_child(child)
                    stopped += 1
        for sid, s in list(self.sessions.items()):
            if s.queue is None and s.stream is None and now - s.last_used > max(self.idle_seconds, 3600):
                self.sessions.pop(sid, None)
        return stopped

    # ------------------------------------------------------------------ protocol
    async def handle(self, slug: str, env: dict[str, str], msg: dict[str, Any], *, caps: dict[str, Any] | None = None,
                     session: str | None = None, side: asyncio.Queue[dict[str, Any]] | None = None,
                     caller: str = "") -> dict[str, Any] | None:
        """One client request (``caps``: what its client declared, which picks the child; ``side``:
        where the server's messages about it go, see ``StdioChild.forward``; ``caller``: who the
        gateway says it serves, to whom a parked 2026-07-28 call's token is bound)."""
        method, mid = msg.get("method"), msg.get("id")
        if method is None or mid is None:
            return None  # notifications and responses stop here: the bridge owns the child's handshake
        if method == "ping":
            return {"jsonrpc": "2.0", "id": mid, "result": {}}
        params = msg.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        modern = isinstance(meta, dict) and meta.get(VERSION_META) == MODERN
        if modern and isinstance(params, dict) and isinstance(meta, dict):  # both are, whenever modern
            state = params.get("requestState")
            if isinstance(state, str) and state.startswith(STATE_PREFIX):  # the retry of a parked call
                return await self._resume(slug, env, msg, state, side, caller)
            # a 2026-07-28 request declares its client's capabilities itself: its child is one started
            # with them (so the server asks only clients that can answer, as for a 2025 session)
            caps = client_caps({"capabilities": meta.get(CAPS_META)})
        try:
            child = await self.child_for(slug, env, caps)
        except ChildError as exc:
            return _error(mid, -32603, f"the server could not start: {exc}")
        except Backoff as exc:
            return _error(mid, -32603, f"{exc} (retry in {exc.retry_after:.1f} s)")
        init = child.init_result or {}
        if method == "initialize":
            return {"jsonrpc": "2.0", "id": mid, "result": init}
        if method == "server/discover":
            # 2026-07-28 has no top-level serverInfo: the server's own travels in the _meta stamp
            result = {"supportedVersions": [MODERN], "capabilities": init.get("capabilities", {}),
                      "resultType": "complete", "ttlMs": 0, "cacheScope": "private",
                      "_meta": {SERVER_INFO_META: init.get("serverInfo") or {}}}
            if init.get("instructions"):
                result["instructions"] = init["instructions"]
            return {"jsonrpc": "2.0", "id": mid, "result": result}
        if modern and isinstance(params, dict) and isinstance(meta, dict):  # both are, whenever modern
            # The child was initialized in the handshake era: the 2026-07-28 envelope keys mean
            # nothing to it, and newer SDKs refuse a request that carries them (-32600).
            rest = {k: v for k, v in meta.items() if k not in ENVELOPE_META}
            p = {k: v for k, v in params.items() if k != "_meta"}
            if rest:
                p["_meta"] = rest
            msg = {**msg, "params": p}
            if method in RELAYED and (caps or side is not None):
                # the server may ask this client something mid-call: multi round-trip (2026-07-28)
                parked = Parked(slug, credential_key(env), caller, method, _name(p), child, side, meta)
                parked.task = asyncio.ensure_future(child.forward(msg, self.call_timeout, _ModernSide(parked),
                                                                  parked.session))
                parked.task.add_done_callback(lambda _t: parked.poke())
                return await self._round(parked, mid)
        try:
            reply = await child.forward(msg, self.call_timeout, side, session)
        except ChildError as exc:
            return _error(mid, -32603, str(exc))
        if modern and isinstance(reply.get("result"), dict):
            # a handshake-era child answering a 2026-07-28 request: add the envelope fields it requires
            result = reply["result"]
            result.setdefault("resultType", "complete")
            if method in CACHEABLE:
                result.setdefault("ttlMs", 0)
                result.setdefault("cacheScope", "private")
        return reply

    # ------------------------------------------------------------------ 2026-07-28 calls that ask
    async def _round(self, parked: Parked, mid: Any) -> dict[str, Any]:
        """Wait for the parked call's reply or its server's next questions. Questions end this request
        with an ``InputRequiredResult`` (a fresh ``requestState`` token; the call stays parked until the
        client retries with the answers, or ``call_timeout``); the reply ends the call."""
        while not parked.questions and parked.task is not None and not parked.task.done():
            parked.wake = asyncio.get_running_loop().create_future()
            await parked.wake
        if parked.questions:
            requests: dict[str, Any] = {}
            for q in parked.questions:
                parked.n += 1
                key = f"q{parked.n}"
                parked.asked[key] = q["id"]
                requests[key] = {"method": q.get("method"), "params": q.get("params") or {}}
            parked.questions.clear()
            token = STATE_PREFIX + secrets.token_urlsafe(24)
            self.parked[token] = parked
            parked.timer = asyncio.get_running_loop().call_later(
                self.call_timeout, lambda: self._spawn(self._expire(token, "the client did not answer in time")))
            return {"jsonrpc": "2.0", "id": mid, "result": {"resultType": "input_required",
                                                             "inputRequests": requests, "requestState": token}}
        assert parked.task is not None
        try:
            reply = parked.task.result()
        except ChildError as exc:
            return _error(mid, -32603, str(exc))
        except Exception as exc:  # the call's task failed: its caller gets an error, never a 500
            return _error(mid, -32603, f"the call failed ({type(exc).__name__})")
        reply = {**reply, "id": mid}
        if isinstance(reply.get("result"), dict):
            reply["result"].setdefault("resultType", "complete")
            if parked.method in CACHEABLE:
                reply["result"].setdefault("ttlMs", 0)
                reply["result"].setdefault("cacheScope", "private")
        return reply

    async def _resume(self, slug: str, env: dict[str, str], msg: dict[str, Any], token: str,
                      side: Any, caller: str) -> dict[str, Any]:
        """A 2026-07-28 retry carrying a parked call's ``requestState``: its ``inputResponses`` go to
        the child as the answers to what it asked, and the call goes on, on this request. The token
        works once, for the same server, caller, credential set, method and tool/prompt/resource."""
        raw = msg.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        parked = self.parked.get(token)
        if parked is None or (parked.slug, parked.key, parked.caller, parked.method, parked.name) != \
                (slug, credential_key(env), caller, msg.get("method"), _name(params)):
            return _error(msg.get("id"), -32602, "unknown or expired requestState: call again without it")
        del self.parked[token]
        if parked.timer is not None:
            parked.timer.cancel()
        given = params.get("inputResponses")
        answers: dict[str, Any] = given if isinstance(given, dict) else {}
        for key, child_id in parked.asked.items():
            reply = {"result": answers[key]} if key in answers else \
                {"error": {"code": -32603, "message": "the client did not answer"}}
            with contextlib.suppress(ChildError):
                await parked.child.answer(child_id, reply, parked.session)
        parked.asked = {}
        parked.side = side
        meta = params.get("_meta")
        if isinstance(meta, dict):  # this leg's own opt-ins (progress token, log level)
            parked.meta = meta
        return await self._round(parked, msg.get("id"))

    async def _expire(self, token: str, why: str) -> None:
        parked = self.parked.pop(token, None)
        if parked is None:
            return
        for child_id in parked.asked.values():  # the server stops waiting; its call ends on its own
            with contextlib.suppress(ChildError):
                await parked.child.answer(child_id, {"error": {"code": -32001, "message": why}}, parked.session)
        parked.asked = {}
        log.info("bridge_parked_expired", slug=parked.slug)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _env_from(self, request: Request, hosted: Hosted) -> dict[str, str]:
        env: dict[str, str] = {}
        for k, v in request.headers.items():
            if k.startswith(ENV_HEADER):
                name = k[len(ENV_HEADER):].upper().replace("-", "_")
                if name not in hosted.allowed_env:
                    raise ValueError(f"{name} is not a variable this server declares")
                env[name] = v
        return env

    async def _mcp(self, request: Request) -> Response:
        """GET and DELETE on ``/s/{slug}/mcp`` (POST is served by :meth:`_post`)."""
        slug = request.path_params["slug"]
        if slug not in self.hosted:
            return JSONResponse({"error": f"no hosted server {slug!r}"}, status_code=404)
        if request.method == "GET":
            session = self.sessions.get(request.headers.get("mcp-session-id") or "")
            if session is None or session.slug != slug or session.queue is not None:
                return Response(status_code=405, headers={"Allow": "POST, DELETE"})
            return self._session_stream(session)
        sid = request.headers.get("mcp-session-id")
        gone = self.sessions.pop(sid, None) if sid else None
        if gone is not None and gone.stream is not None:
            with contextlib.suppress(asyncio.QueueFull):
                gone.stream.put_nowait({})  # its GET stream ends with it
        return Response(status_code=204)

    def _session_stream(self, session: Session) -> Response:
        """A 2025 session's GET stream: what its child says outside any call (``OUTSIDE_CALLS``:
        list_changed, and resources/updated of what this session subscribed to). One per session:
        a second GET replaces the first."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(STREAM_BACKLOG)
        if session.stream is not None:
            with contextlib.suppress(asyncio.QueueFull):
                session.stream.put_nowait({})  # ends the older stream
        session.stream = queue

        async def stream() -> Any:
            # Not an idle hold (unlike a legacy SSE stream): every 2025 client keeps one open, so a
            # hold would keep its child up for good. A stopped child's sessions end their streams.
            try:
                yield ": stream\n\n"
                async for frame in _frames(queue, end_on_empty=True):
                    yield frame
            finally:
                if session.stream is queue:
                    session.stream = None

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _outside(self, slug: str, key: str, msg: dict[str, Any]) -> None:
        """A notification of child ``key`` of ``slug`` outside any call, to the GET streams of the
        sessions on that child: resources/updated only to those that subscribed to its URI (never
        another session's guess), list_changed to all of them."""
        uri = msg.get("params", {}).get("uri") if isinstance(msg.get("params"), dict) else None
        updated = msg.get("method") == "notifications/resources/updated"
        for session in self.sessions.values():
            if session.slug != slug or session.stream is None or child_key(session.env, session.caps) != key:
                continue
            if updated and uri not in session.subscriptions:
                continue
            with contextlib.suppress(asyncio.QueueFull):  # a stream not read: the backlog is bounded
                session.stream.put_nowait(msg)

    async def _sse(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        hosted = self.hosted.get(slug)
        if hosted is None:
            return JSONResponse({"error": f"no hosted server {slug!r}"}, status_code=404)
        try:
            env = self._env_from(request, hosted)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        sid = uuid.uuid4().hex
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sessions[sid] = Session(slug, credential_key(env), env, queue)

        async def stream() -> Any:
            try:
                with self.idle.holding(slug, credential_key(env)):  # an open stream: its child is not idle
                    yield sse.encode(f"/s/{slug}/messages?session_id={sid}".encode(), event="endpoint")
                    async for frame in _frames(queue):
                        yield frame
            finally:
                self.sessions.pop(sid, None)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _messages(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        session = self.sessions.get(request.query_params.get("session_id", ""))
        if session is None or session.slug != slug or session.queue is None:
            return JSONResponse({"error": "unknown session"}, status_code=404)
        try:
            msg = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "invalid JSON"}, status_code=400)
        if not isinstance(msg, dict):
            return JSONResponse({"error": "invalid JSON-RPC message"}, status_code=400)
        session.last_used = time.monotonic()
        queue = session.queue
        sid = request.query_params["session_id"]
        if msg.get("method") == "initialize":
            session.caps = client_caps(msg.get("params"))
        elif "method" not in msg and "id" in msg:  # an answer to what the server asked
            await self.answer(slug, session.env, session.caps, msg, sid)
            return Response(status_code=202)
        elif msg.get("method") == "notifications/cancelled":
            await self.cancel(slug, session.env, session.caps, msg, sid)
            return Response(status_code=202)

        async def run() -> None:
            # what the server says during the call goes down the session's stream, as the reply does
            reply = await self.handle(slug, session.env, msg, caps=session.caps, session=sid, side=queue)
            if reply is not None:
                await queue.put(reply)

        # keep a reference: the loop holds tasks weakly, and a collected task would drop the reply
        task = asyncio.create_task(run())
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return Response(status_code=202)


RELAYED = frozenset({"tools/call", "prompts/get", "resources/read"})  # calls during which a server may ask
STATE_PREFIX = "wemcp-br."  # the bridge's requestState tokens (2026-07-28 calls whose server asked)
CAPS_META = "io.modelcontextprotocol/clientCapabilities"
LOG_META = "io.modelcontextprotocol/logLevel"
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


async def _frames(queue: asyncio.Queue[dict[str, Any]], *, end_on_empty: bool = False) -> AsyncIterator[str | bytes]:
    """A GET stream's SSE frames: each message put on ``queue``, and a keep-alive comment after 15 s
    without one; with ``end_on_empty``, an empty message ends the stream (a newer stream replaced it)."""
    while True:
        try:
            msg = await asyncio.wait_for(queue.get(), 15)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if end_on_empty and not msg:
            return
        yield sse.encode(json.dumps(msg, separators=(",", ":")).encode())


def _name(params: dict[str, Any]) -> Any:
    return params.get("name", params.get("uri"))


def _talks(msg: dict[str, Any]) -> bool:
    """A 2026-07-28 call whose client takes what the server says during it: progress (a token),
    log messages (a level) or questions (an asking capability)."""
    params = msg.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict) or meta.get(VERSION_META) != MODERN:
        return False
    caps = meta.get(CAPS_META)
    return "progressToken" in meta or LOG_META in meta or \
        (isinstance(caps, dict) and any(k in caps for k in ASKING))


@dataclass
class Parked:
    """A 2026-07-28 call on a child whose server may ask the client something (multi round-trip):
    it runs on the child under ``session`` (a key of its own, so only its retries can answer), its
    questions wait in ``questions`` until a round hands them to the client, ``asked`` maps the
    keys of the round in flight to the child's request ids."""

    slug: str
    key: str  # the credential set it runs with: a retry must come with the same
    caller: str  # who the gateway served (X-WeMcp-Caller): a retry must be theirs
    method: str
    name: Any
    child: StdioChild
    side: Any  # where this leg's progress and log messages go (None: dropped)
    meta: dict[str, Any]
    task: asyncio.Future[dict[str, Any]] | None = None
    session: str = field(default_factory=lambda: "mrtr-" + uuid.uuid4().hex)
    questions: list[dict[str, Any]] = field(default_factory=list)
    asked: dict[str, Any] = field(default_factory=dict)
    n: int = 0
    wake: asyncio.Future[None] | None = None
    timer: asyncio.TimerHandle | None = None

    def poke(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


class _ModernSide:
    """What a 2026-07-28 call's server says during it: questions park the call (``Parked``); progress
    goes to the current leg's stream, log messages too when that leg opted in at or below their level."""

    def __init__(self, parked: Parked) -> None:
        self.parked = parked

    def put_nowait(self, msg: dict[str, Any]) -> None:
        p = self.parked
        if "id" in msg:
            p.questions.append(msg)
            p.poke()
            return
        if p.side is None:
            return
        if msg.get("method") == "notifications/message":
            wanted = p.meta.get(LOG_META)
            level = msg.get("params", {}).get("level") if isinstance(msg.get("params"), dict) else None
            if wanted not in LEVELS or level not in LEVELS or LEVELS.index(level) < LEVELS.index(wanted):
                return
        elif msg.get("method") == "notifications/progress" and "progressToken" in p.meta \
                and isinstance(msg.get("params"), dict):  # under this leg's own token
            msg = {**msg, "params": {**msg["params"], "progressToken": p.meta["progressToken"]}}
        else:
            return
        with contextlib.suppress(asyncio.QueueFull):
            p.side.put_nowait(msg)


def credential_key(env: dict[str, str]) -> str:
    """Children are keyed by the *values* of a caller's variables, kept only as a hash."""
    if not env:
        return _NO_CREDENTIALS
    return hashlib.sha256(json.dumps(sorted(env.items())).encode()).hexdigest()


_NO_CREDENTIALS = hashlib.sha256(json.dumps([]).encode()).hexdigest()


def child_key(env: dict[str, str], caps: dict[str, Any] | None) -> str:
    """A child per credential set and per set of client capabilities it was initialized with."""
    key = credential_key(env)
    return key + ":" + json.dumps(caps, sort_keys=True, separators=(",", ":")) if caps else key


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # what orjson refuses but json reads (NaN, integers over 64 bits)
        return json.loads(data)


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # integers over 64 bits
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _error(mid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": mid, "error": {"code": code, "message": message}}
