"""A lean, pooled HTTP/1.1 client for the gateway's hot path to upstream MCP servers.

Why not aiohttp: per proxied call its Python overhead (request/response objects, stream readers,
timers, tracing hooks, cookie jar...) was a large share of the gateway's CPU. This client does the
minimum: one ``asyncio.Protocol`` per connection fed to ``httptools`` (llhttp), the request written
in one ``transport.write``, no task per request (the caller's task awaits a future resolved by the
protocol callbacks), one timer per wait.

- ``http://`` and ``https://`` only; no redirects, no cookies, no decompression, no proxies.
- Pool: per origin a LIFO list of idle connections, at most ``max_connections`` open in total
  (callers beyond that queue FIFO for a slot, bounded by their request timeout). A connection goes
  back to the pool as soon as its response has been received completely (before the body is read:
  it is kept on the response), so a response never read or never released does not leak it.
- A server's ``Keep-Alive: timeout=N`` is honoured: its connection is not reused once it has been
  idle for ``N - 1`` seconds (Node's servers close idle connections after 5 s and say so).
- A request is never sent twice: a connection taken from the pool that turns out dead once the
  request was written raises ``ServerDisconnected`` (the request might not be idempotent).
- Timeouts: ``connect_timeout`` for TCP+TLS (``ConnectError``); ``timeout`` (or the per-request one)
  until the response headers, then as an idle timeout between body chunks while reading (builtin
  ``TimeoutError``). A stream that keeps sending is never cut.
- ``egress``: a :class:`~wemcp.common.netpolicy.EgressPolicy` for user-supplied upstreams: each new
  connection resolves the host once, checks every address and connects to a checked one (DNS
  rebinding cannot slip in between); pooled connections pay nothing more.
- Header names and values, the method and the request target are checked: CR, LF or NUL anywhere
  (header values carry end users' API keys) raise ``ProtocolError`` before anything is sent.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

if TYPE_CHECKING:
    from wemcp.common.netpolicy import EgressPolicy

__all__ = ["ConnectError", "H1Client", "H1Error", "H1Response", "HeaderItems", "ProtocolError", "ServerDisconnected"]


class HeaderItems(Protocol):
    """Request headers: a mapping, or anything whose ``items()`` gives (name, value) pairs — a name may
    then repeat (the replicas forward a client's headers as sent)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


class H1Error(Exception):
    """Base of this client's errors (timeouts are the builtin ``TimeoutError``)."""


class ConnectError(H1Error):
    """The connection could not be opened: refused, DNS, TLS handshake, connect timeout."""


class ServerDisconnected(H1Error):
    """The connection ended (EOF or reset) before the response was complete."""


class ProtocolError(H1Error):
    """An unparsable response, or a request that cannot be sent as asked (bad URL or header)."""


_HIGH_WATER = 1 << 20  # buffered unread body bytes above which the socket stops being read (until taken)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_BAD_HOST = re.compile(r"[\x00-\x20\x7f/?#@\[\]\\]")
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_METHODS: set[str] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_NAMES: dict[str, str] = {}  # header names already checked -> lower-case
_SPECIAL = frozenset({"host", "content-length", "transfer-encoding"})
_MAX_CACHED = 4096


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        raise ProtocolError(f"invalid header name {name!r}")
    low = name.lower()
    if len(_NAMES) >= _MAX_CACHED:
        _NAMES.clear()
    _NAMES[name] = low
    return low


def _check_method(method: str) -> None:
    if not isinstance(method, str) or _TOKEN.fullmatch(method) is None:
        raise ProtocolError(f"invalid method {method!r}")
    if method == "CONNECT":
        raise ProtocolError("CONNECT is not supported")
    if len(_METHODS) < 64:
        _METHODS.add(method)


def _bad_header(headers: HeaderItems | None) -> ProtocolError:
    """The error for a header block that failed the CR/LF/NUL check (slow path: find the culprit)."""
    for k, v in (headers or {}).items():
        if any(c in str(v) for c in "\r\n\0"):
            return ProtocolError(f"the value of header {k!r} contains CR, LF or NUL")
    return ProtocolError("a header contains CR, LF or NUL")


class _Target:
    """A parsed URL: where to connect and the precomputed request-line and Host pieces."""

    __slots__ = ("host", "host_line", "key", "line", "port", "tls")

    def __init__(self, url: str) -> None:
        scheme, sep, rest = url.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in ("http", "https"):
            raise ProtocolError(f"unsupported URL {url!r} (http:// or https:// only)")
        self.tls = scheme == "https"
        end = len(rest)
        for c in "/?#":
            i = rest.find(c)
            if 0 <= i < end:
                end = i
        authority, target = rest[:end], rest[end:].partition("#")[0]
        port_s = ""
        if authority.startswith("["):
            close = authority.find("]")
            if close < 0:
                raise ProtocolError(f"invalid IPv6 host in {url!r}")
            host, after = authority[1:close], authority[close + 1:]
            if after:
                if not after.startswith(":"):
                    raise ProtocolError(f"invalid authority in {url!r}")
                port_s = after[1:]
            if not host or _BAD_TARGET.search(host) or ":" not in host:
                raise ProtocolError(f"invalid IPv6 host in {url!r}")
        else:
            host, colon, port_s = authority.partition(":")
            if colon and not port_s:
                raise ProtocolError(f"invalid port in {url!r}")
            if not host or _BAD_HOST.search(host):
                raise ProtocolError(f"invalid host in {url!r}")
        default = 443 if self.tls else 80
        if port_s:
            if not port_s.isdigit() or not 0 < int(port_s) < 65536:
                raise ProtocolError(f"invalid port in {url!r}")
            port = int(port_s)
        else:
            port = default
        host = host.lower()
        if not target:
            target = "/"
        elif target[0] == "?":
            target = "/" + target
        if _BAD_TARGET.search(target):
            raise ProtocolError(f"the request target of {url!r} contains a space or a control character")
        shown = f"[{host}]" if ":" in host else host
        hostport = shown if port == default else f"{shown}:{port}"
        self.host, self.port = host, port
        self.key = f"{scheme}://{shown}:{port}"
        self.line = f" {target} HTTP/1.1\r\n"
        self.host_line = f"Host: {hostport}\r\n"


class H1Response:
    """An HTTP response: status and headers at once, the body as it arrives (``content.iter_any()``)
    or whole (``read()``). ``release()`` (or leaving ``async with``) gives the connection back, or
    closes it when the body was not received completely."""

    __slots__ = ("_body", "_chunks", "_conn", "_done", "_exc", "_greedy", "_size", "_timeout", "headers", "reason",
                 "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], conn: _Conn | None, timeout: float) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._conn = conn
        self._timeout = timeout
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._exc: BaseException | None = None
        self._body: bytes | None = None
        self._greedy = False

    def __repr__(self) -> str:
        return f"<H1Response {self.status} {self.reason}>"

    @property
    def content(self) -> H1Response:
        """aiohttp-shaped: ``resp.content.iter_any()``."""
        return self

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive: everything received since the previous chunk was taken."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._size = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                yield data
            elif self._done:
                return
            elif self._exc is not None:
                raise self._exc
            else:
                await self._wait()

    async def read(self) -> bytes:
        """The whole body (what ``iter_any`` has not taken yet); the same bytes when called again."""
        if self._body is not None:
            return self._body
        if not self._done:
            self._greedy = True
            conn = self._conn
            if conn is not None and conn.paused:
                conn.resume()
            while not self._done:
                if self._exc is not None:
                    raise self._exc
                await self._wait()
        chunks = self._chunks
        body = (chunks[0] if len(chunks) == 1 else b"".join(chunks)) if chunks else b""
        self._chunks = []
        self._size = 0
        self._body = body
        return body

    async def _wait(self) -> None:
        """Until the connection delivers more (or fails); the request timeout bounds each wait."""
        conn = self._conn
        if conn is None:
            raise self._exc or H1Error("the response was released")
        loop = conn.loop
        fut = loop.create_future()
        conn.fut = fut
        timer = loop.call_at(loop.time() + self._timeout, conn.on_body_timeout, fut)
        try:
            await fut
        except BaseException:  # cancelled: the rest of the body will never be read
            self.release()
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        """Idempotent. The connection went back to the pool when the response was complete; if it is
        not, the connection is closed (its remaining bytes would be taken for the next response)."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if not self._done:
            if self._exc is None:
                self._exc = H1Error("the response was released before its body was received")
            conn.close(abort=True)

    async def __aenter__(self) -> H1Response:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()


class _Conn(asyncio.Protocol):
    """One connection; the parser calls back into it as bytes arrive."""

    __slots__ = ("busy", "client", "close_delim", "closed", "fut", "hdrs", "head", "idle", "idle_since", "interim",
                 "keepalive", "key", "loop", "parser", "paused", "reason", "resp", "timeout", "timer", "transport")

    def __init__(self, client: H1Client, key: str, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser: HttpResponseParser | None = HttpResponseParser(self)
        self.busy = False  # a request is outstanding (its response not complete)
        self.closed = False
        self.idle = False  # in the pool's idle list
        self.idle_since = 0.0
        self.keepalive = client._keepalive  # how long it may stay idle (the server's Keep-Alive may shorten it)
        self.fut: asyncio.Future[Any] | None = None  # the caller waiting: for the headers, then for body data
        self.timer: asyncio.TimerHandle | None = None  # the headers timeout
        self.resp: H1Response | None = None
        self.hdrs: dict[str, str] = {}
        self.reason = b""
        self.head = False
        self.interim = False
        self.close_delim = False
        self.paused = False
        self.timeout = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):  # not TCP
                pass
        self.client._conns.add(self)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or not self.busy:  # closed, or bytes nobody asked for: the connection is unusable
            self.close(ProtocolError("unexpected bytes from the server"), abort=True)
            return
        try:
            parser.feed_data(data)
        except HttpParserUpgrade:
            self.close(ProtocolError("the server switched protocols"), abort=True)
        except HttpParserError as exc:
            self.close(ProtocolError(f"invalid HTTP response: {exc}"), abort=True)

    def eof_received(self) -> bool | None:
        if not self.busy:  # idle: out of the pool now, not when the transport gets round to connection_lost
            self.close()
        return None  # the transport closes; connection_lost decides what the EOF means for a response

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        if exc is None and self.close_delim and self.resp is not None:
            self._complete(False)  # a body delimited by the end of the connection
            return
        self.close(ServerDisconnected("the server closed the connection" if exc is None
                                      else f"the connection broke: {exc!r}"))

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        k = name.decode("latin-1").lower()
        h = self.hdrs
        if k in h:
            h[k] += ", " + value.decode("latin-1")
        else:
            h[k] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self.parser
        if parser is None or not self.busy or self.resp is not None:
            self.close(ProtocolError("a response nobody asked for"), abort=True)
            return
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                self.close(ProtocolError("the server switched protocols"), abort=True)
                return
            self.interim = True  # 100 Continue, 103 Early Hints...: the real response follows
            self.hdrs = {}
            self.reason = b""
            return
        h = self.hdrs
        resp = self.resp = H1Response(status, self.reason.decode("latin-1"), h, self, self.timeout)
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        ka = h.get("keep-alive")
        if ka is not None:
            self.keepalive = min(self.keepalive, _keepalive_hint(ka))
        if not self.head and status != 204 and status != 304 and "content-length" not in h:
            te = h.get("transfer-encoding")
            self.close_delim = te is None or not te.rstrip().lower().endswith("chunked")
        fut = self.fut
        self.fut = None
        if fut is not None and not fut.done():
            fut.set_result(resp)
        if self.head:  # llhttp would wait for the Content-Length body; a fresh parser for the next response
            keep = parser.should_keep_alive()
            self.parser = HttpResponseParser(self)
            self._complete(keep)

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is None:  # bytes after a HEAD response, or after the connection failed
            self.close(ProtocolError("unexpected bytes from the server"), abort=True)
            return
        resp._chunks.append(body)
        size = resp._size = resp._size + len(body)
        fut = self.fut
        if fut is not None:
            self.fut = None
            if not fut.done():
                fut.set_result(None)
        if size > _HIGH_WATER and not self.paused and not resp._greedy and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.resp is None:
            return  # HEAD: completed at the headers
        parser = self.parser
        self._complete(parser is not None and parser.should_keep_alive())

    # -- internals ---------------------------------------------------------------------------------
    def send(self, data: bytes, head: bool, timeout: float) -> asyncio.Future[Any]:
        self.busy = True
        self.head = head
        self.close_delim = False
        self.timeout = timeout
        loop = self.loop
        fut = self.fut = loop.create_future()
        self.timer = loop.call_at(loop.time() + timeout, self.on_timeout)
        assert self.transport is not None
        self.transport.write(data)
        return fut

    def _complete(self, keep: bool) -> None:
        """The response was received completely: it keeps its body; the connection is free."""
        resp = self.resp
        assert resp is not None
        self.resp = None
        self.busy = False
        self.hdrs = {}
        self.reason = b""
        resp._done = True
        resp._conn = None
        fut = self.fut
        if fut is not None:
            self.fut = None
            if not fut.done():
                fut.set_result(None)
        if self.paused:
            self.resume()
        if keep and not self.closed:
            self.client._put_idle(self)
        else:
            self.close()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def on_timeout(self) -> None:
        self.timer = None
        self.close(TimeoutError(f"no response from the server within {self.timeout:g} s"), abort=True)

    def on_body_timeout(self, fut: asyncio.Future[Any]) -> None:
        if not fut.done():  # (data may have come in the same turn of the loop)
            self.close(TimeoutError(f"the server sent nothing for {self.timeout:g} s"), abort=True)

    def close(self, exc: BaseException | None = None, abort: bool = False) -> None:
        """Close (idempotent); a caller waiting on this connection gets ``exc`` (default: disconnected)."""
        if self.closed:
            return
        self.closed = True
        self.busy = False
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()
        self.parser = None  # breaks the parser <-> protocol cycle
        resp = self.resp
        if resp is not None:
            self.resp = None
            resp._conn = None
            if not resp._done and resp._exc is None:
                resp._exc = exc or ServerDisconnected("the connection closed before the response was complete")
        fut = self.fut
        if fut is not None:
            self.fut = None
            if not fut.done():
                if resp is None:  # still waiting for the headers
                    fut.set_exception(exc or ServerDisconnected("the server closed the connection"))
                else:
                    fut.set_result(None)
        if transport is not None:
            self.client._closed_conn(self)


def _keepalive_hint(value: str) -> float:
    """Seconds a connection may stay idle given the server's ``Keep-Alive: timeout=N, max=M``: a
    second less than it says (the close may already be on its way); unbounded when it says nothing."""
    for part in value.split(","):
        name, _, n = part.strip().partition("=")
        if name.strip().lower() == "timeout":
            try:
                return max(float(n.strip()) - 1.0, 0.0)
            except ValueError:
                return float("inf")
    return float("inf")


def _expire(fut: asyncio.Future[Any], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(f"no free connection within {timeout:g} s"))


class H1Client:
    """A pooled HTTP/1.1 client (see the module docstring). One per event loop."""

    __slots__ = ("_closed", "_connect_timeout", "_conns", "_egress", "_idle", "_keepalive", "_loop", "_max", "_open",
                 "_ssl", "_sweeper", "_targets", "_timeout", "_waiters")

    def __init__(self, *, max_connections: int = 512, connect_timeout: float = 3.0, timeout: float = 60.0,
                 keepalive_seconds: float = 60.0, ssl_context: ssl.SSLContext | None = None,
                 egress: EgressPolicy | None = None) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._keepalive = keepalive_seconds
        self._ssl = ssl_context
        self._egress = egress
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[str, list[_Conn]] = {}  # origin -> idle connections, most recently used last
        self._conns: set[_Conn] = set()  # every connected connection (idle or busy)
        self._open = 0  # connection slots taken: connected or connecting
        self._waiters: deque[tuple[str, asyncio.Future[Any]]] = deque()  # (origin, future) waiting for a slot
        self._targets: dict[str, _Target] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def connections(self) -> int:
        """Connections open or being opened."""
        return self._open

    @property
    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def request(self, method: str, url: str, body: bytes = b"", headers: HeaderItems | None = None,
                      timeout: float | None = None) -> H1Response:  # noqa: ASYNC109 (the per-request override)
        if self._closed:
            raise H1Error("the client is closed")
        t = self._targets.get(url)
        if t is None:
            t = self._target(url)
        if method not in _METHODS:
            _check_method(method)
        parts = [method, t.line]
        n = 2  # lines: the request line and the blank line
        host = True
        if headers:
            names = _NAMES
            for k, v in headers.items():
                low = names.get(k)
                if low is None:
                    low = _check_name(k)
                if low in _SPECIAL:
                    if low == "content-length":
                        continue  # always computed here
                    if low == "transfer-encoding":
                        raise ProtocolError("Transfer-Encoding is not supported (the body is sent whole)")
                    host = False
                parts.append(f"{k}: {v}\r\n")
                n += 1
        if host:
            parts.append(t.host_line)
            n += 1
        if body or method not in _NO_BODY_METHODS:
            parts.append(f"Content-Length: {len(body)}\r\n\r\n")
            n += 1
        else:
            parts.append("\r\n")
        head = "".join(parts)
        # every line ends with CRLF; one more CR or LF (or a NUL) anywhere is an injection attempt
        if head.count("\n") != n or head.count("\r") != n or "\0" in head:
            raise _bad_header(headers)
        data = head.encode() + body if body else head.encode()
        if timeout is None:
            timeout = self._timeout
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()

        conn: _Conn | None = None
        idle = self._idle.get(t.key)
        if idle:
            now = loop.time()
            while idle:
                c = idle.pop()
                c.idle = False
                if c.closed:
                    continue
                if now - c.idle_since > c.keepalive:
                    c.close()
                    continue
                conn = c
                break
        if conn is None:
            conn = await self._connect(t, timeout)
        fut = conn.send(data, method == "HEAD", timeout)
        try:
            resp: H1Response = await fut
        except BaseException:
            if not fut.done() or fut.cancelled() or fut.exception() is not None:
                conn.close(abort=True)
            else:  # cancelled after the headers arrived
                fut.result().release()
            raise
        return resp

    def _target(self, url: str) -> _Target:
        t = _Target(url)
        if len(self._targets) >= _MAX_CACHED:
            self._targets.clear()
        self._targets[url] = t
        return t

    async def _connect(self, t: _Target, timeout: float) -> _Conn:  # noqa: ASYNC109
        """A new connection to ``t`` (or an idle one of its origin handed over by a finishing request)."""
        loop = self._loop
        assert loop is not None
        ctx = None
        if t.tls:
            ctx = self._ssl
            if ctx is None:
                ctx = self._ssl = ssl.create_default_context()
        while True:
            if self._closed:
                raise H1Error("the client is closed")
            waiters = self._waiters
            while waiters and waiters[0][1].done():  # given up (timed out, cancelled)
                waiters.popleft()
            if self._open < self._max and not waiters:
                self._open += 1
                break
            if not waiters and self._evict_idle():
                continue
            got = await self._wait_slot(t.key, timeout)
            if got is None:
                break  # a slot was handed over
            if not got.closed:
                return got
        conn = _Conn(self, t.key, loop)
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._egress is None:
                    await loop.create_connection(lambda: conn, t.host, t.port, ssl=ctx,
                                                 server_hostname=t.host if ctx is not None else None)
                else:  # resolve once, check every address, connect to a checked one (SNI: the name)
                    await self._egress.create_connection(loop, lambda: conn, t.host, t.port, ssl=ctx)
        except BaseException as exc:
            if conn.transport is not None:
                conn.close(abort=True)
            else:
                self._release_slot()
            if isinstance(exc, OSError):  # refused, DNS, TLS (ssl.SSLError), TimeoutError
                what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc}"
                raise ConnectError(f"connecting to {t.key} {what}") from exc
            raise
        if self._closed:
            conn.close(abort=True)
            raise H1Error("the client is closed")
        if conn.closed:
            raise ServerDisconnected(f"{t.key} closed the connection at once")
        return conn

    async def _wait_slot(self, key: str, timeout: float) -> _Conn | None:  # noqa: ASYNC109
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiters.append((key, fut))
        timer = loop.call_later(timeout, _expire, fut, timeout)
        try:
            got: _Conn | None = await fut
            return got
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:  # handed something, leaving anyway
                got = fut.result()
                if got is None:
                    self._release_slot()
                else:
                    self._put_idle(got)
            raise
        finally:
            timer.cancel()

    def _evict_idle(self) -> bool:
        """Close the least recently used idle connection of any origin (the pool is full)."""
        victim: _Conn | None = None
        for conns in self._idle.values():
            if conns and (victim is None or conns[0].idle_since < victim.idle_since):
                victim = conns[0]
        if victim is None:
            return False
        victim.close()
        return True

    def _release_slot(self) -> None:
        """A slot is free: to the first caller waiting, else back to the pool's count."""
        waiters = self._waiters
        while waiters:
            _, fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._open -= 1

    def _put_idle(self, conn: _Conn) -> None:
        if self._closed:
            conn.close()
            return
        waiters = self._waiters
        while waiters:
            key, fut = waiters[0]
            if fut.done():
                waiters.popleft()
                continue
            if key == conn.key:
                waiters.popleft()
                fut.set_result(conn)
            else:
                conn.close()  # its slot goes to that caller
            return
        loop = self._loop
        assert loop is not None
        conn.idle = True
        conn.idle_since = loop.time()
        conns = self._idle.get(conn.key)
        if conns is None:
            conns = self._idle[conn.key] = []
        conns.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(min(max(self._keepalive / 2, 0.05), 30.0), self._sweep)

    def _closed_conn(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        if conn.idle:
            conn.idle = False
            conns = self._idle.get(conn.key)
            if conns is not None and conn in conns:
                conns.remove(conn)
        self._release_slot()

    def _sweep(self) -> None:
        """Close the connections idle longer than ``keepalive_seconds``."""
        self._sweeper = None
        loop = self._loop
        if loop is None or self._closed:
            return
        oldest = loop.time() - self._keepalive
        left = False
        for key, conns in list(self._idle.items()):
            while conns and conns[0].idle_since < oldest:
                conns[0].close()  # removes it from the list
            if conns:
                left = True
            else:
                del self._idle[key]
        if left:
            self._sweeper = loop.call_later(min(max(self._keepalive / 2, 0.05), 30.0), self._sweep)

    async def close(self) -> None:
        """Close every connection, idle or in use; requests made afterwards raise ``H1Error``."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        waiters, self._waiters = self._waiters, deque()
        for _, fut in waiters:
            if not fut.done():
                fut.set_exception(H1Error("the client is closed"))
        for conn in list(self._conns):
            conn.close(H1Error("the client is closed"), abort=True)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
