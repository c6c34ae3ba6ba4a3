"""A loopback HTTP load balancer for the tests and the bench: each *request* (not each connection) goes
to the next backend in turn, so a client's session requests, its SSE stream and its retries land on
different gateway replicas. Bodies are relayed, answers streamed back (SSE included); the client
leaving closes the backend request. It keeps Host and adds X-Forwarded-For, like a real balancer."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import aiohttp

from wemcp.gateway.replicas import relay_answer

# Host is passed on, as balancers do (the gateway checks it and Origin against it)
_DROP_REQ = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te",
                       b"upgrade", b"proxy-connection"})
_DROP_RESP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"})


class RoundRobin:
    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self.hits: Counter[int] = Counter()  # requests sent to each backend
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5),
                                               connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        i = next(self._next)
        self.hits[i] += 1
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        qs = scope.get("query_string", b"").decode("latin-1")
        url = self.backends[i] + scope.get("raw_path", scope["path"].encode()).decode("latin-1") + (f"?{qs}" if qs
                                                                                                   else "")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _DROP_REQ]
        headers.append(("x-forwarded-for", scope["client"][0] if scope.get("client") else "127.0.0.1"))
        body = b"".join(chunks)
        try:
            resp = await self._http.request(scope["method"], url, headers=headers, data=body or None,
                                            allow_redirects=False)
        except (aiohttp.ClientError, OSError):
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"backend unreachable"})
            return
        try:  # streamed back as the gateway relays a replica's answer
            await relay_answer(resp, _DROP_RESP, receive, send, (aiohttp.ClientError, OSError))
        finally:
            resp.close()
