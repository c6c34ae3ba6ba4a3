"""Server-sent events: one incremental parser (and the encoder of one event) for every service.

The parser follows the WHATWG HTML "event stream interpretation"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- a UTF-8 byte order mark at the very start of the stream is dropped;
- lines end with CRLF, LF or CR (a CR at the end of one chunk and an LF at the start of the next are
  one line end);
- a line starting with ``:`` is a comment (keep-alives); a line without ``:`` is a field with an
  empty value; otherwise the field's name is what comes before the first ``:`` and its value what
  comes after, with **one** leading space removed;
- ``data``: the value is appended to the event's data, lines joined with ``\\n``; ``event``: the
  event's type (``message`` when none); ``id``: the last event id (ignored when it holds NUL; kept
  across events, an empty value resets it); ``retry``: the reconnection time in ms, only when the
  value is ASCII digits; other fields are ignored;
- a blank line dispatches the event, unless its data is empty (an event with only an ``id`` still
  moves the last event id, which is how a server primes a stream for resumption);
- at the end of the stream an unfinished event is discarded — unless the caller asks for it
  (``close(dispatch_incomplete=True)``): some servers end a body without the final blank line.

Input is bytes as they arrive, cut anywhere (the parser keeps the unfinished line); data stays
bytes (a JSON-RPC message goes to ``orjson.loads`` as is), ``event`` and ``id`` are text.
``max_bytes`` bounds what one event may hold (an unfinished line plus the data gathered so far):
beyond it :class:`SseTooLarge` is raised, so a peer cannot make the reader buffer without end.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ["SseEvent", "SseParser", "SseTooLarge", "aiter_events", "encode", "parse"]

BOM = b"\xef\xbb\xbf"
_CR, _LF = b"\r", b"\n"


class SseTooLarge(ValueError):
    """One event (or one line) of the stream is larger than the parser's ``max_bytes``."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: bytes
    event: str = "message"
    id: str = ""  # the stream's last event id when this event was dispatched ("" when none)


class SseParser:
    """Feed it the bytes of one stream as they come; it returns the events each chunk completes.

    ``last_id`` is the stream's last event id (None until an ``id`` field was seen), ``retry`` the
    last valid reconnection time (ms) the server gave (None until one was given)."""

    __slots__ = ("_data", "_data_size", "_event", "_head", "_pending", "_pending_size", "_skip_lf",
                 "last_id", "max_bytes", "retry")

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.last_id: str | None = None
        self.retry: int | None = None
        self._head: bytes | None = b""  # the stream's first bytes while a BOM may still be coming; None after
        self._pending: list[bytes] = []  # an unfinished line, in pieces (joined once: linear in its size)
        self._pending_size = 0
        self._skip_lf = False  # the last chunk ended with CR: an LF starting the next one ends no line
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._head is not None:  # the start of the stream: drop a BOM, even one cut across chunks
            head = self._head + chunk
            if len(head) < len(BOM) and BOM.startswith(head):
                self._head = head
                return []
            self._head = None
            chunk = head[len(BOM):] if head.startswith(BOM) else head
        if self._skip_lf:
            if not chunk:
                return []
            self._skip_lf = False
            if chunk[0] == 10:  # b"\n"
                chunk = chunk[1:]
        if _LF not in chunk and _CR not in chunk:  # the line goes on
            if chunk:
                self._pending.append(chunk)
                self._pending_size += len(chunk)
                self._check(self._pending_size)
            return []
        if self._pending:
            self._pending.append(chunk)
            chunk = b"".join(self._pending)
            self._pending.clear()
        if _CR in chunk:
            if chunk.endswith(_CR):
                self._skip_lf = True
            chunk = chunk.replace(b"\r\n", _LF).replace(_CR, _LF)
        *lines, rest = chunk.split(_LF)
        out: list[SseEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                out.append(event)
        if rest:
            self._pending.append(rest)
        self._pending_size = len(rest)
        self._check(self._pending_size)
        return out

    def close(self, *, dispatch_incomplete: bool = False) -> list[SseEvent]:
        """The end of the stream: an unfinished event is discarded (the standard), or dispatched as
        if a blank line had ended it when ``dispatch_incomplete``. The parser is then ready for the
        next stream of a reconnection, keeping ``last_id`` and ``retry`` (as an EventSource does)."""
        out: list[SseEvent] = []
        if self._head:  # a stream of fewer bytes than a BOM that are a BOM's start: not a BOM after all
            head, self._head = self._head, None
            out.extend(self.feed(head))
        if dispatch_incomplete:
            if self._pending:
                line = b"".join(self._pending)
                self._pending.clear()
                self._pending_size = 0
                event = self._line(line)
                if event is not None:
                    out.append(event)
            event = self._line(b"")
            if event is not None:
                out.append(event)
        self._pending.clear()
        self._pending_size = 0
        self._data.clear()
        self._data_size = 0
        self._event = ""
        self._head, self._skip_lf = b"", False
        return out

    def _check(self, size: int) -> None:
        if self.max_bytes is not None and size + self._data_size > self.max_bytes:
            raise SseTooLarge(f"an SSE event over {self.max_bytes} bytes")

    def _line(self, line: bytes) -> SseEvent | None:
        if not line:  # dispatch
            if not self._data:
                self._event = ""
                return None
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            event = SseEvent(data, self._event or "message", self.last_id or "")
            self._data.clear()
            self._data_size = 0
            self._event = ""
            return event
        colon = line.find(b":")
        if colon == 0:
            return None  # a comment
        if colon < 0:
            name, value = line, b""
        else:
            name, value = line[:colon], line[colon + 1:]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            self._check(0)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self.last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():  # bytes: ASCII digits only
                self.retry = int(value)
        return None


def parse(body: bytes, *, dispatch_incomplete: bool = False) -> list[SseEvent]:
    """The events of a whole SSE body."""
    parser = SseParser()
    return parser.feed(body) + parser.close(dispatch_incomplete=dispatch_incomplete)


async def aiter_events(chunks: AsyncIterable[bytes], parser: SseParser | None = None, *,
                       dispatch_incomplete: bool = False) -> AsyncIterator[SseEvent]:
    """The events of a stream of byte chunks as they complete; ``parser`` (optional) is the one
    used, so the caller can read its ``last_id`` and ``retry`` during and after."""
    p = parser if parser is not None else SseParser()
    async for chunk in chunks:
        for event in p.feed(chunk):
            yield event
    for event in p.close(dispatch_incomplete=dispatch_incomplete):
        yield event


def encode(data: bytes, event: str | None = "message", id: str | None = None, retry: int | None = None) -> bytes:
    """One event on the wire. ``data`` may hold line ends (each line becomes a ``data:`` line);
    ``event``/``id`` must not (they would end the field early): ValueError."""
    parts: list[bytes] = []
    if id is not None:
        parts.append(b"id: " + _field(id) + b"\n")
    if retry is not None:
        parts.append(b"retry: %d\n" % retry)
    if event is not None:
        parts.append(b"event: " + _field(event) + b"\n")
    if _LF in data or _CR in data:
        data = data.replace(b"\r\n", _LF).replace(_CR, _LF)
        parts.extend(b"data: " + line + b"\n" for line in data.split(_LF))
    else:
        parts.append(b"data: " + data + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def _field(value: str) -> bytes:
    if "\n" in value or "\r" in value:
        raise ValueError("an SSE field value may not hold a line end")
    return value.encode()
