"""Event ids and resumption for the SSE streams the gateway writes to 2025 sessions (the Streamable
HTTP spec's "Resumability and Redelivery", 2025-06-18 / 2025-11-25).

Every event of a call's SSE answer carries ``id: <stream>-<n>`` (the stream's number in the session,
the event's number in the stream). A client whose stream broke sends ``GET`` on the session with
``Last-Event-ID``; it gets the events of *that* stream after that id (never another stream's), then
the rest of the call as it happens, and the response ends after the call's reply.

Bounded: a session keeps its last ``STREAMS_PER_SESSION`` streams, each at most ``EVENTS_PER_STREAM``
events; an id that fell out of the buffer (or was never issued) resumes nothing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

STREAMS_PER_SESSION = 8
EVENTS_PER_STREAM = 256


class StreamLog:
    """The events of one SSE answer, in order; ``done`` once the call's reply was written."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.first = 1  # the number of events[0]
        self.events: list[bytes] = []  # each a whole SSE event, its id line included
        self.done = False
        self._changed = asyncio.Event()

    def add(self, data: bytes, *, final: bool = False, retry: int | None = None) -> bytes:
        """The SSE event for ``data`` (a JSON-RPC message; b"" for a priming event, which may carry the
        ``retry`` hint in ms), kept for replay."""
        n = self.first + len(self.events)
        event = b"id: %d-%d\n" % (self.number, n)
        if retry is not None:
            event += b"retry: %d\n" % retry
        event += b"event: message\ndata: " + data + b"\n\n" if data else b"data: \n\n"
        self.events.append(event)
        if len(self.events) > EVENTS_PER_STREAM:
            del self.events[0]
            self.first += 1
        self.done = self.done or final
        self._changed.set()
        return event

    def after(self, n: int) -> list[bytes] | None:
        """The events after event ``n``; None when some of them are no longer kept."""
        if n + 1 < self.first or n >= self.first + len(self.events):
            return None
        return self.events[n + 1 - self.first:]

    async def changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()


class SessionEvents:
    """The SSE streams of one 2025 session, for resumption."""

    def __init__(self) -> None:
        self.streams: OrderedDict[int, StreamLog] = OrderedDict()
        self._next = 1

    def open(self) -> StreamLog:
        log = StreamLog(self._next)
        self._next += 1
        self.streams[log.number] = log
        while len(self.streams) > STREAMS_PER_SESSION:
            self.streams.popitem(last=False)
        return log

    def find(self, last_event_id: str) -> tuple[StreamLog, int] | None:
        stream, _, n = last_event_id.strip().partition("-")
        if not (stream.isdigit() and n.isdigit()):
            return None
        log = self.streams.get(int(stream))
        if log is None or log.after(int(n)) is None:
            return None
        return log, int(n)
