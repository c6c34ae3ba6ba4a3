"""Scale to zero: when a hosted server's child may be stopped, and what a stop invalidates.

A child is idle when nothing uses it — no call in flight (``StdioChild.in_flight``), no open stream
of a session on its credential set (a legacy SSE stream, a GET stream or a streaming response:
transports hold one with :meth:`IdlePolicy.holding`) — for longer than its server's idle time:
the deployment's own ``idleSeconds`` (clamped to ``[min_seconds, max_seconds]``) or the global
``WEMCP_DEPLOYER_IDLE_SECONDS``. The reaper stops idle children; the next call starts a fresh one.

A stopped child's state is gone, so the Streamable HTTP sessions opened on it are forgotten too: a
request with such an ``Mcp-Session-Id`` gets 404 and the client initialises again (MCP spec,
session management). 2026-07-28 requests carry no session and simply start the child.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator
from typing import Protocol


class _Child(Protocol):
    in_flight: int
    last_used: float


class IdlePolicy:
    def __init__(self, default_seconds: float, *, min_seconds: float = 1.0, max_seconds: float = 86400.0) -> None:
        self.default_seconds = default_seconds
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        # open streams per (slug, credential key): a child behind one is never idle
        self.streams: collections.Counter[tuple[str, str]] = collections.Counter()
        # last activity per (slug, credential key) of streams, for the time after one closes
        self._touched: dict[tuple[str, str], float] = {}

    def seconds_for(self, own: float | None) -> float:
        """The idle time of a server: its deployment's own, within bounds, else the global one."""
        if own is None:
            return self.default_seconds
        return min(max(own, self.min_seconds), self.max_seconds)

    @contextlib.contextmanager
    def holding(self, slug: str, key: str) -> Iterator[None]:
        """Keep the child of (slug, credential key) running while the block runs (an open stream)."""
        self.streams[(slug, key)] += 1
        try:
            yield
        finally:
            self.streams[(slug, key)] -= 1
            if self.streams[(slug, key)] <= 0:
                del self.streams[(slug, key)]
            self._touched[(slug, key)] = time.monotonic()

    def is_idle(self, slug: str, key: str, child: _Child, own: float | None, now: float) -> bool:
        if child.in_flight > 0 or self.streams.get((slug, key), 0) > 0:
            return False
        last = max(child.last_used, self._touched.get((slug, key), child.last_used))
        return now - last > self.seconds_for(own)

    def forget(self, slug: str, key: str | None = None) -> None:
        for k in [k for k in self._touched if k[0] == slug and (key is None or k[1] == key)]:
            self._touched.pop(k, None)
