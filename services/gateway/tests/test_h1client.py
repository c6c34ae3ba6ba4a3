"""The gateway's HTTP/1.1 client (h1client.py) against real servers on loopback: uvicorn apps
(``serve_app``) and raw ``asyncio.start_server`` servers for exact bytes and misbehaviour."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wemcp.devstack.testing import serve_app, wait_for
from wemcp.gateway.h1client import (
    ConnectError,
    H1Client,
    H1Error,
    ProtocolError,
    ServerDisconnected,
    _Target,
)

Request = tuple[bytes, bytes]  # (head up to and including the blank line, body)


# -- a raw server ------------------------------------------------------------------------------------------
async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request (Content-Length bodies only: this client sends no other), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return head, body


def reply(body: bytes = b"{}", status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status.encode(), len(body), extra, body)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """Waits for the client to close its end: True at EOF or reset."""
    try:
        return await reader.read() == b""
    except ConnectionError:
        return True


Handler = Callable[["Raw", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answers_once(data: bytes) -> Handler:
    """Reads one request, writes ``data`` (whatever it is), then waits for the client to close."""
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(data)
        await closed_by_peer(reader)

    return handler


async def echo_handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive: answers each request with its body."""
    while (req := await read_request(reader)) is not None:
        srv.requests.append(req)
        writer.write(reply(req[1]))
        await writer.drain()


class Raw:
    """``asyncio.start_server`` on loopback; counts connections (accepted, open now, most open at once)
    and records requests; every connection is closed (and its handler ended) on exit."""

    def __init__(self, handler: Handler = echo_handler, *, host: str = "127.0.0.1",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler, self.host, self.ssl_context = handler, host, ssl_context
        self.accepted = self.open = self.max_open = 0
        self.requests: list[Request] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.url = ""

    async def _on(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.append(writer)
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the test is over (__aexit__)
        finally:
            self.open -= 1
            writer.close()
            self.tasks.discard(task)

    async def __aenter__(self) -> Raw:
        self.server = await asyncio.start_server(self._on, self.host, 0, ssl=self.ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{'https' if self.ssl_context else 'http'}://{shown}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[H1Client]:
    c = H1Client(max_connections=8, timeout=2.0, connect_timeout=1.0)
    yield c
    await c.close()


# -- requests as sent ---------------------------------------------------------------------------------------
async def test_post_sends_exact_bytes_in_one_write(client: H1Client) -> None:
    first_reads: list[bytes] = []

    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first_reads.append(await reader.read(65536))  # the request arrives whole: it was written at once
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Multi: a\r\nx-multi: b\r\n"
                     b"Content-Length: 11\r\n\r\n{\"ok\":true}")
        await writer.drain()
        await closed_by_peer(reader)

    body = b'{"jsonrpc":"2.0","id":1}'
    async with Raw(handler) as srv:
        port = srv.url.rsplit(":", 1)[1]
        resp = await client.request("POST", srv.url + "/mcp/x?a=1&b=%20c", body,
                                    {"Content-Type": "application/json", "X-Api-Key": "k-1"})
        assert (resp.status, resp.reason) == (201, "Created")
        assert resp.headers == {"content-type": "application/json", "x-multi": "a, b", "content-length": "11"}
        assert await resp.read() == b'{"ok":true}'
        assert await resp.read() == b'{"ok":true}'  # the same bytes again
        resp.release()
    assert first_reads == [b"POST /mcp/x?a=1&b=%20c HTTP/1.1\r\nContent-Type: application/json\r\nX-Api-Key: k-1\r\n"
                           b"Host: 127.0.0.1:" + port.encode() + b"\r\nContent-Length: 24\r\n\r\n" + body]


async def test_content_length_and_host_rules(client: H1Client) -> None:
    async with Raw() as srv:
        for method, body in (("GET", b""), ("HEAD", b""), ("POST", b""), ("DELETE", b""), ("PUT", b"x")):
            async with await client.request(method, srv.url, body) as resp:
                await resp.read()
        async with await client.request("GET", srv.url + "?q=1", headers={"host": "example.org",
                                                                         "content-length": "999"}) as resp:
            await resp.read()
    heads = [head for head, _ in srv.requests]
    port = srv.url.rsplit(":", 1)[1].encode()
    assert heads[0] == b"GET / HTTP/1.1\r\nHost: 127.0.0.1:" + port + b"\r\n\r\n"  # no body, no Content-Length
    assert heads[1].startswith(b"HEAD / ") and b"content-length" not in heads[1].lower()
    assert heads[2].endswith(b"\r\nContent-Length: 0\r\n\r\n") and heads[2].startswith(b"POST / ")
    assert heads[3].endswith(b"\r\nContent-Length: 0\r\n\r\n")
    assert heads[4].endswith(b"\r\nContent-Length: 1\r\n\r\n") and srv.requests[4][1] == b"x"
    # the caller's Host wins; its Content-Length is replaced by the real one (none for an empty GET)
    assert heads[5] == b"GET /?q=1 HTTP/1.1\r\nhost: example.org\r\n\r\n"
    for head in heads:
        assert b"user-agent" not in head.lower() and b"accept-encoding" not in head.lower()
    assert srv.accepted == 1


async def test_json_round_trip_through_uvicorn(client: H1Client) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        out = json.dumps({"method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode(),
                          "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
                          "body": body.decode()}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    async with serve_app(app) as base:
        resp = await client.request("POST", base + "/mcp/echo?x=1", b'{"a": 1}',
                                    {"content-type": "application/json", "mcp-method": "tools/call"})
        assert resp.status == 200 and resp.headers["content-type"] == "application/json"
        got = json.loads(await resp.read())
        resp.release()
        assert got["method"] == "POST" and got["path"] == "/mcp/echo" and got["query"] == "x=1"
        assert got["body"] == '{"a": 1}'
        assert got["headers"] == {"content-type": "application/json", "mcp-method": "tools/call",
                                  "host": base.removeprefix("http://"), "content-length": "8"}
        await client.close()  # before uvicorn shuts down


# -- the pool ---------------------------------------------------------------------------------------------------
async def test_keepalive_reuses_one_connection(client: H1Client) -> None:
    async with Raw() as srv:
        for i in range(5):
            resp = await client.request("POST", srv.url + "/mcp", b"%d" % i)
            assert await resp.read() == b"%d" % i
            resp.release()
            resp.release()  # idempotent
        assert srv.accepted == 1 and len(srv.requests) == 5
        assert client.connections == 1 and client.idle_connections == 1
        conn = next(iter(client._conns))
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_concurrency_is_bounded_by_max_connections(client: H1Client) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            srv.requests.append(req)
            await asyncio.sleep(0.002)  # so that requests overlap
            writer.write(reply(req[1]))
            await writer.drain()

    async def one(i: int) -> bytes:
        async with await client.request("POST", srv.url, b"req-%d" % i) as resp:
            return await resp.read()

    async with Raw(handler) as srv:
        results = await asyncio.gather(*(one(i) for i in range(64)))
        assert results == [b"req-%d" % i for i in range(64)]
        assert srv.max_open <= 8 and srv.accepted == 8  # all 8 used, none more, each kept alive
        assert len(srv.requests) == 64
        assert client.connections == 8 and not client._waiters


async def test_waiting_for_a_slot_is_bounded_by_the_timeout() -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        assert req is not None
        if req[1] == b"hang":
            await closed_by_peer(reader)
            return
        writer.write(reply(req[1]))
        await echo_handler(srv, reader, writer)

    c = H1Client(max_connections=1, timeout=2.0)
    async with Raw(handler) as srv:
        hung = asyncio.create_task(c.request("POST", srv.url, b"hang"))
        await wait_for(lambda: srv.accepted == 1)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await c.request("POST", srv.url, b"second", timeout=0.1)
        assert 0.09 < time.monotonic() - t0 < 0.6
        assert srv.accepted == 1  # never more than one connection
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung
        assert c.connections == 0
        async with await c.request("POST", srv.url, b"third") as resp:
            assert await resp.read() == b"third"
        assert srv.accepted == 2 and not c._waiters
    await c.close()


async def test_full_pool_closes_an_idle_connection_of_another_origin() -> None:
    c = H1Client(max_connections=1, timeout=2.0)
    async with Raw() as a, Raw() as b:
        async with await c.request("POST", a.url, b"a") as resp:
            assert await resp.read() == b"a"
        assert c.idle_connections == 1
        async with await c.request("POST", b.url, b"b") as resp:
            assert await resp.read() == b"b"
        assert c.connections == 1 and a.accepted == 1 and b.accepted == 1
        await wait_for(lambda: a.open == 0)  # a's connection was closed to make room
    await c.close()


async def test_idle_connections_expire() -> None:
    c = H1Client(keepalive_seconds=0.05, timeout=2.0)
    async with Raw() as srv:
        async with await c.request("POST", srv.url, b"1") as resp:
            await resp.read()
        assert c.idle_connections == 1
        await wait_for(lambda: srv.open == 0, timeout=1)  # closed by the sweep
        assert c.connections == 0
        async with await c.request("POST", srv.url, b"2") as resp:
            assert await resp.read() == b"2"
        assert srv.accepted == 2
    await c.close()


async def test_the_servers_keep_alive_timeout_is_honoured() -> None:
    """``Keep-Alive: timeout=N``: reused until N - 1 s of idleness, then a fresh connection."""
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            srv.requests.append(req)
            writer.write(reply(req[1], extra=b"Keep-Alive: timeout=1.2, max=100\r\n"))
            await writer.drain()

    c = H1Client(keepalive_seconds=60.0, timeout=2.0)
    async with Raw(handler) as srv:
        for body in (b"1", b"2"):  # back to back: one connection
            async with await c.request("POST", srv.url, body) as resp:
                assert await resp.read() == body
        assert srv.accepted == 1
        await asyncio.sleep(0.3)  # idle longer than 1.2 - 1 s: the server may be closing it
        async with await c.request("POST", srv.url, b"3") as resp:
            assert await resp.read() == b"3"
        assert srv.accepted == 2 and len(srv.requests) == 3
    await c.close()


# -- bodies ----------------------------------------------------------------------------------------------------
async def test_chunked_response_then_reuse(client: H1Client) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            srv.requests.append(req)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"hello", b" ", b"world"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")

    async with Raw(handler) as srv:
        for _ in range(2):
            async with await client.request("GET", srv.url) as resp:
                assert await resp.read() == b"hello world"
        assert srv.accepted == 1


async def test_close_delimited_response(client: H1Client) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
        await writer.drain()
        writer.write(b"and the rest")
        writer.close()

    async with Raw(handler) as srv:
        for _ in range(2):
            resp = await client.request("GET", srv.url)
            assert await resp.read() == b"first part, and the rest"
            resp.release()
            assert client.connections == 0  # the end of the body was the end of the connection
        assert srv.accepted == 2


async def test_sse_is_streamed_as_it_arrives(client: H1Client) -> None:
    go_on = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await go_on.wait()  # the second event only once the client has the first
        await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: three\n\n"})

    async with serve_app(app) as base:
        resp = await client.request("POST", base + "/mcp", b"{}", {"accept": "text/event-stream"})
        assert resp.headers["content-type"] == "text/event-stream"
        it = resp.content.iter_any()
        async with asyncio.timeout(2):
            assert await anext(it) == b"data: one\n\n"
        assert not go_on.is_set()
        go_on.set()
        rest = [chunk async for chunk in it]
        assert b"".join(rest) == b"data: two\n\ndata: three\n\n"
        resp.release()
        await client.close()


async def test_read_after_partial_iteration_returns_the_rest(client: H1Client) -> None:
    go_on = asyncio.Event()

    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
        await go_on.wait()
        writer.write(b"56789")
        await closed_by_peer(reader)

    async with Raw(handler) as srv:
        resp = await client.request("GET", srv.url)
        assert await anext(resp.content.iter_any()) == b"01234"
        go_on.set()
        assert await resp.read() == b"56789"
        assert client.idle_connections == 1  # complete: back in the pool


async def test_204_and_head_have_no_body(client: H1Client) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            srv.requests.append(req)
            if req[0].startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
            elif req[0].startswith(b"DELETE"):
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                writer.write(reply(b"after"))

    async with Raw(handler) as srv:
        for method in ("HEAD", "DELETE", "HEAD", "GET"):
            resp = await client.request(method, srv.url)
            body = await resp.read()
            resp.release()
            if method == "GET":
                assert body == b"after"
            else:
                assert body == b"" and resp.status == (204 if method == "DELETE" else 200)
                assert method == "DELETE" or resp.headers["content-length"] == "1234"
        assert srv.accepted == 1  # the same connection throughout: no body was waited for


async def test_interim_100_continue_is_skipped(client: H1Client) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            writer.write(reply(req[1], extra=b"X-Final: yes\r\n"))

    async with Raw(handler) as srv:
        for i in range(2):
            async with await client.request("POST", srv.url, b"b%d" % i) as resp:
                assert resp.status == 200 and resp.headers["x-final"] == "yes"
                assert await resp.read() == b"b%d" % i
        assert srv.accepted == 1


async def test_large_body_pauses_reading_until_taken(client: H1Client) -> None:
    size = 32 << 20
    finished = asyncio.Event()

    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = bytes(range(256)) * 256
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
        finished.set()
        await closed_by_peer(reader)

    async with Raw(handler) as srv:
        resp = await client.request("GET", srv.url)
        await wait_for(lambda: resp._conn is not None and resp._conn.paused, timeout=2)
        await asyncio.sleep(0.05)
        assert resp._size <= (1 << 20) + (1 << 18)  # buffered: about 1 MiB, not the whole body
        total = 0
        async for chunk in resp.content.iter_any():
            total += len(chunk)
        assert total == size and finished.is_set()


# -- the connection's end ----------------------------------------------------------------------------------
@pytest.mark.parametrize("status_line,extra", [(b"HTTP/1.1 200 OK", b"Connection: close\r\n"),
                                               (b"HTTP/1.0 200 OK", b"")])
async def test_connection_close_is_honoured(client: H1Client, status_line: bytes, extra: bytes) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        assert req is not None
        writer.write(status_line + b"\r\nContent-Length: 2\r\n" + extra + b"\r\nok")
        await writer.drain()
        await closed_by_peer(reader)  # the server leaves the closing to the client

    async with Raw(handler) as srv:
        for _ in range(2):
            async with await client.request("GET", srv.url) as resp:
                assert await resp.read() == b"ok"
            assert client.connections == 0
        await wait_for(lambda: srv.open == 0)
        assert srv.accepted == 2


async def test_idle_connection_closed_by_the_server_is_replaced(client: H1Client) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        assert req is not None
        srv.requests.append(req)
        writer.write(reply(req[1]))  # keep-alive by the headers, then the server's idle timeout
        await writer.drain()

    async with Raw(handler) as srv:
        async with await client.request("POST", srv.url, b"1") as resp:
            assert await resp.read() == b"1"
        await wait_for(lambda: client.connections == 0)  # the client saw the EOF while idle
        async with await client.request("POST", srv.url, b"2") as resp:
            assert await resp.read() == b"2"
        assert srv.accepted == 2 and len(srv.requests) == 2


async def test_server_closing_after_the_request_is_not_retried(client: H1Client) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            srv.requests.append(req)
            if req[1] == b"boom":
                return  # closes without answering
            writer.write(reply(req[1]))

    async with Raw(handler) as srv:
        async with await client.request("POST", srv.url, b"fine") as resp:
            assert await resp.read() == b"fine"
        with pytest.raises(ServerDisconnected):
            await client.request("POST", srv.url, b"boom")  # on the pooled connection
        assert [body for _, body in srv.requests] == [b"fine", b"boom"]  # sent once, never again
        assert srv.accepted == 1 and client.connections == 0
        with pytest.raises(ServerDisconnected):
            await client.request("POST", srv.url, b"boom")  # on a new connection
        assert [body for _, body in srv.requests] == [b"fine", b"boom", b"boom"] and srv.accepted == 2


async def test_disconnect_mid_body(client: H1Client) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")

    async with Raw(handler) as srv:
        resp = await client.request("GET", srv.url)
        with pytest.raises(ServerDisconnected):
            await resp.read()
        resp2 = await client.request("GET", srv.url)
        chunks = []
        with pytest.raises(ServerDisconnected):
            async for chunk in resp2.content.iter_any():
                chunks.append(chunk)
        assert chunks == [b"partial"]  # what arrived, then the error
        assert client.connections == 0


async def test_garbage_response_is_a_protocol_error(client: H1Client) -> None:
    async with Raw(answers_once(b"SMTP ready\r\n\r\n")) as srv:
        with pytest.raises(ProtocolError):
            await client.request("GET", srv.url)
        assert client.connections == 0


async def test_connect_refused_is_a_connect_error(client: H1Client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once closed
    with pytest.raises(ConnectError):
        await client.request("GET", f"http://127.0.0.1:{port}/")
    assert client.connections == 0  # the slot was given back


async def test_headers_never_arriving_time_out(client: H1Client) -> None:
    saw_close = asyncio.Event()

    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if await closed_by_peer(reader):
            saw_close.set()

    async with Raw(handler) as srv:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.request("POST", srv.url, b"x", timeout=0.15)
        assert 0.14 < time.monotonic() - t0 < 0.6
        await asyncio.wait_for(saw_close.wait(), 1)  # the connection was closed, not pooled
        assert client.connections == 0


async def test_idle_timeout_between_chunks_but_a_live_stream_is_never_cut(client: H1Client) -> None:
    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(7):  # a chunk every 30 ms for 210 ms: longer than the timeout, never idle that long
                writer.write(b"6\r\ntick\n\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.03)
            if req[1] == b"stall":
                await closed_by_peer(reader)
                return
            writer.write(b"0\r\n\r\n")

    async with Raw(handler) as srv:
        resp = await client.request("POST", srv.url, b"live", timeout=0.15)
        assert await resp.read() == b"tick\n\n" * 7
        resp = await client.request("POST", srv.url, b"stall", timeout=0.15)
        got = b""
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            async for chunk in resp.content.iter_any():
                got += chunk
                t0 = time.monotonic()
        assert got == b"tick\n\n" * 7
        assert 0.14 < time.monotonic() - t0 < 0.6
        assert srv.accepted == 1 and client.connections == 0  # one connection, reused, closed at the timeout
        await wait_for(lambda: srv.open == 0)


# -- safety ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{"X-Api-Key": "k\r\nX-Evil: 1"}, {"X-Api-Key": "k\nX-Evil: 1"},
                                     {"X-Api-Key": "k\rX"}, {"X-Api-Key": "k\0"}, {"X-Evil: 1\r\nX-A": "v"},
                                     {"Bad Name": "v"}, {"": "v"}, {"X-Api-Key:": "v"}])
async def test_header_injection_is_refused_before_sending(client: H1Client, headers: dict[str, str]) -> None:
    async with Raw() as srv:
        with pytest.raises(ProtocolError):
            await client.request("POST", srv.url + "/mcp", b"{}", {"content-type": "application/json", **headers})
        async with await client.request("POST", srv.url, b"ok") as resp:  # the client is still fine
            assert await resp.read() == b"ok"
        assert [body for _, body in srv.requests] == [b"ok"]
        assert b"evil" not in srv.requests[0][0].lower()


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:80/", "http://127.0.0.1:x/", "http:///path",
                                 "http://127.0.0.1/a b", "http://127.0.0.1/a\r\nX-Evil: 1", "http://[::1/"])
async def test_bad_urls_are_refused(client: H1Client, url: str) -> None:
    with pytest.raises(ProtocolError):
        await client.request("GET", url)
    assert client.connections == 0


async def test_bad_method_is_refused(client: H1Client) -> None:
    with pytest.raises(ProtocolError):
        await client.request("GET / HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET", "http://127.0.0.1:9/")


def test_url_parts() -> None:
    t = _Target("http://[::1]:8080")
    assert (t.host, t.port, t.tls, t.key) == ("::1", 8080, False, "http://[::1]:8080")
    assert (t.line, t.host_line) == (" / HTTP/1.1\r\n", "Host: [::1]:8080\r\n")
    t = _Target("HTTPS://Example.COM?q=1#frag")
    assert (t.host, t.port, t.tls, t.line, t.host_line) == ("example.com", 443, True, " /?q=1 HTTP/1.1\r\n",
                                                            "Host: example.com\r\n")
    assert _Target("http://h:80/x").host_line == "Host: h\r\n"
    assert _Target("https://h:80/x").host_line == "Host: h:80\r\n"


async def test_ipv6_loopback(client: H1Client) -> None:
    async with Raw(host="::1") as srv:
        async with await client.request("POST", srv.url + "/v6", b"six") as resp:
            assert await resp.read() == b"six"
        port = srv.url.rsplit(":", 1)[1]
        assert srv.requests[0][0].startswith(b"POST /v6 HTTP/1.1\r\nHost: [::1]:" + port.encode() + b"\r\n")


# -- cancellation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", ["headers", "body"])
async def test_cancellation_closes_the_connection(client: H1Client, phase: str) -> None:
    saw_close = asyncio.Event()
    got_first = asyncio.Event()

    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        assert req is not None
        if req[1] == b"stall":
            if phase == "body":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            if await closed_by_peer(reader):
                saw_close.set()
            return
        writer.write(reply(req[1]))
        await echo_handler(srv, reader, writer)

    async def call() -> None:
        resp = await client.request("POST", srv.url, b"stall")
        async for _ in resp.content.iter_any():
            got_first.set()

    async with Raw(handler) as srv:
        task = asyncio.create_task(call())
        if phase == "body":
            await asyncio.wait_for(got_first.wait(), 1)
        else:
            await wait_for(lambda: srv.accepted == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(saw_close.wait(), 1)  # the server saw the connection closed
        assert client.connections == 0 and client.idle_connections == 0 and not client._waiters
        async with await client.request("POST", srv.url, b"after") as resp:  # the pool is fine
            assert await resp.read() == b"after"
        assert srv.accepted == 2


async def test_release_before_the_end_closes_and_is_idempotent(client: H1Client) -> None:
    async with Raw(answers_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly some")) as srv:
        resp = await client.request("GET", srv.url)
        resp.release()
        resp.release()
        assert client.connections == 0
        with pytest.raises(H1Error):
            await resp.read()
        await wait_for(lambda: srv.open == 0)


async def test_closed_client_refuses_and_closes_connections_in_use() -> None:
    c = H1Client(timeout=2.0)

    async def handler(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await closed_by_peer(reader)

    async with Raw(handler) as srv:
        pending = asyncio.create_task(c.request("GET", srv.url))
        await wait_for(lambda: srv.accepted == 1)
        await c.close()
        with pytest.raises(H1Error):
            await pending
        with pytest.raises(H1Error):
            await c.request("GET", srv.url)
        await wait_for(lambda: srv.open == 0)
        assert c.connections == 0


# -- TLS ----------------------------------------------------------------------------------------------------------
def self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]]:
    """(server context, client context trusting the server's certificate, server names the server saw)."""
    cert, key = self_signed()
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert)
    (d / "key.pem").write_bytes(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(d / "cert.pem", d / "key.pem")
    names: list[str | None] = []
    server.sni_callback = lambda sock, name, ctx: names.append(name)
    return server, ssl.create_default_context(cadata=cert.decode()), names


async def test_https_with_a_trusted_self_signed_certificate(
        tls: tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]]) -> None:
    server_ctx, client_ctx, names = tls
    c = H1Client(ssl_context=client_ctx, timeout=2.0)
    async with Raw(ssl_context=server_ctx) as srv:
        port = srv.url.rsplit(":", 1)[1]
        url = f"https://localhost:{port}/secure?x=1"
        for i in range(3):
            async with await c.request("POST", url, b"tls-%d" % i) as resp:
                assert resp.status == 200 and await resp.read() == b"tls-%d" % i
        assert srv.accepted == 1  # kept alive over TLS
        assert names[-1] == "localhost"  # SNI
        assert srv.requests[0][0].startswith(b"POST /secure?x=1 HTTP/1.1\r\nHost: localhost:" + port.encode())
        conn = next(iter(c._conns))
        assert conn.transport is not None and conn.transport.get_extra_info("ssl_object") is not None
        await c.close()
        # the system's trust store does not know this certificate: the handshake fails -> ConnectError
        untrusting = H1Client(timeout=2.0)
        with pytest.raises(ConnectError) as err:
            await untrusting.request("GET", url)
        assert isinstance(err.value.__cause__, ssl.SSLCertVerificationError)
        assert untrusting.connections == 0
        await untrusting.close()
        # an address the certificate does not carry: the hostname check fails
        mismatch = H1Client(ssl_context=client_ctx, timeout=2.0)
        async with Raw(host="127.0.0.2", ssl_context=server_ctx) as other:
            with pytest.raises(ConnectError) as err:
                await mismatch.request("GET", other.url)
            assert isinstance(err.value.__cause__, ssl.SSLCertVerificationError)
        await mismatch.close()


async def test_egress_policy_checks_each_new_connection_at_connect_time(
        tls: tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]], monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``egress``: the name is resolved once per *new* connection and the connection goes to the
    checked address (TLS still verifies, and SNI and Host still name, the host); a pooled connection
    is reused without resolving again; a name that now answers the loopback is refused."""
    from wemcp.common import netpolicy
    from wemcp.common.netpolicy import EgressPolicy, refusal_in

    server_ctx, client_ctx, names = tls
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[tuple[int, str]]:
        lookups.append(host)
        return [(socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr(netpolicy, "resolve", resolver)
    policy = EgressPolicy(registries=False)
    c = H1Client(ssl_context=client_ctx, timeout=2.0, egress=policy)
    async with Raw(ssl_context=server_ctx) as srv:
        url = f"https://localhost:{srv.url.rsplit(':', 1)[1]}/x"
        with pytest.raises(ConnectError) as err:
            await c.request("GET", url)
        assert refusal_in(err.value) is not None and refusal_in(err.value).reason == "loopback"
        assert srv.accepted == 0 and c.connections == 0
        policy.add("127.0.0.1")
        for _ in range(3):
            async with await c.request("GET", url) as resp:
                assert resp.status == 200
        assert lookups == ["localhost", "localhost"] and srv.accepted == 1  # once per connection
        assert names[-1] == "localhost" and srv.requests[0][0].startswith(b"GET /x HTTP/1.1\r\nHost: localhost:")
    await c.close()


# -- the same on uvloop (the gateway's loop) -------------------------------------------------------------------
def test_core_paths_on_uvloop(tls: tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]]) -> None:
    server_ctx, client_ctx, _ = tls

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        assert type(loop).__module__.startswith("uvloop")
        c = H1Client(max_connections=4, timeout=2.0, ssl_context=client_ctx)
        go_on = asyncio.Event()

        async def streaming(srv: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (req := await read_request(reader)) is not None:
                srv.requests.append(req)
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                await writer.drain()
                if req[1] == b"stall":
                    await closed_by_peer(reader)
                    return
                await go_on.wait()
                writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

        async with Raw(streaming) as srv, Raw(ssl_context=server_ctx) as tls_srv:
            resp = await c.request("POST", srv.url, b"go")
            it = resp.content.iter_any()
            assert await asyncio.wait_for(anext(it), 1) == b"first"
            go_on.set()
            assert [chunk async for chunk in it] == [b"second"]
            results = await asyncio.gather(*(c.request("POST", srv.url, b"%d" % i) for i in range(8)),
                                           return_exceptions=True)
            assert not [r for r in results if isinstance(r, BaseException)]
            assert [await r.read() for r in results if not isinstance(r, BaseException)] == [b"firstsecond"] * 8
            assert srv.max_open <= 4
            task = asyncio.create_task(c.request("POST", srv.url, b"stall"))
            r = await task
            assert await anext(r.content.iter_any()) == b"first"
            reader_task = asyncio.create_task(r.read())
            await wait_for(lambda: r._conn is not None and r._conn.fut is not None)  # read() is waiting
            reader_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader_task
            assert r._conn is None  # closed, not pooled
            port = tls_srv.url.rsplit(":", 1)[1]
            for _ in range(2):
                async with await c.request("POST", f"https://localhost:{port}/", b"secure") as resp:
                    assert await resp.read() == b"secure"
            assert tls_srv.accepted == 1
            with pytest.raises(ProtocolError):
                await c.request("POST", srv.url, b"", {"x-api-key": "a\r\nb: c"})
            await c.close()
            assert c.connections == 0

    uvloop.run(scenario())

