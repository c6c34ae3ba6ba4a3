"""The gateway's durable spool of call-event batches that could not be published (NATS down, refusing,
or not acknowledging in time): an append-only log of segment files on local disk, replayed in order.

Layout: ``<dir>/<seq:020d>.seg`` segment files and a ``lock`` file (``flock``: one gateway process
per directory). Each record is ``<u32 length><u32 crc32>`` followed by ``length`` payload bytes:
``<u16 calls><u8 id length><msg id><batch JSON>``; the CRC covers the payload. A batch is stored
exactly as it was first tried, so a replay is the same bytes under the same ``Nats-Msg-Id``.

- A process appends only to a segment it created (a new one at start and after ``segment_bytes``).
  A record is one ``write`` of the whole record: once it returns the bytes are in the kernel's page
  cache and survive a crash of the process (SIGKILL); ``sync()`` (every second from the recorder, at
  rotation and at close) ``fsync``\\ s them, so a power loss can lose at most the last second.
- A torn last record (the process killed inside ``write``, the machine losing power) is detected by
  its length running past the end of the file or by its CRC, logged once and cut off at start-up;
  a record with a bad CRC inside a segment is skipped (logged), the records after it are kept.
- The spool holds at most ``max_bytes`` on disk; an append that would pass it is refused (the caller
  counts what it drops).
- Replay reads records from the oldest segment on; ``consumed(segment, offset)`` marks everything
  before ``offset`` as published, and a segment consumed to its end is deleted. After a restart a
  partly published segment is replayed from its start (the repeats are deduplicated by msg id).

Single-threaded by design: every method is called from the event loop's thread; appends are small
writes (a batch is at most ~512 KiB) and replay reads one segment at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from wemcp.common.logging import get_logger

log = get_logger("wemcp.gateway.spool")

_HEAD = struct.Struct("<II")  # payload length, crc32(payload)
_META = struct.Struct("<HB")  # calls in the batch, length of the msg id
MAX_RECORD = 16 * 1024 * 1024  # a length above this is garbage, not a record


class SpoolBusy(RuntimeError):
    """Another process holds the spool directory."""


@dataclass(slots=True)
class Segment:
    seq: int
    path: Path
    size: int = 0  # bytes of complete records
    records: int = 0
    consumed: int = 0  # bytes already published (replay position); in memory only


@dataclass(slots=True)
class Record:
    msg_id: str
    data: bytes
    calls: int
    end: int  # offset just past this record in its segment


def encode(msg_id: str, data: bytes, calls: int) -> bytes:
    mid = msg_id.encode()
    payload = _META.pack(min(calls, 0xFFFF), len(mid)) + mid + data
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def parse(buf: bytes | memoryview, start: int = 0, where: str = "") -> tuple[list[Record], int, int]:
    """The records in ``buf`` from ``start``: (records, end of the last complete record, bad records
    skipped). Stops at a torn tail (length past the end, or an impossible length)."""
    out: list[Record] = []
    pos, n, bad = start, len(buf), 0
    while pos + _HEAD.size <= n:
        length, crc = _HEAD.unpack_from(buf, pos)
        end = pos + _HEAD.size + length
        if length < _META.size or length > MAX_RECORD or end > n:
            break  # torn (or garbage) tail: everything from here on is unusable
        payload = bytes(buf[pos + _HEAD.size:end])
        if zlib.crc32(payload) != crc:
            bad += 1
            log.warning("spool_bad_record", segment=where, offset=pos, bytes=length)
        else:
            calls, idlen = _META.unpack_from(payload)
            mid = payload[_META.size:_META.size + idlen].decode()
            out.append(Record(mid, payload[_META.size + idlen:], calls, end))
        pos = end
    return out, pos, bad


class Spool:
    def __init__(self, directory: Path | str, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.segments: list[Segment] = []
        self._fd: int | None = None  # the segment this process appends to (always the last one)
        self._dirty = False
        self._lock_fd: int | None = None
        self.torn = 0  # torn tails cut off at open
        self.bad = 0  # records skipped for a bad CRC

    # -- open / close ---------------------------------------------------------------------------------
    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(f"the spool directory {self.dir} is in use by another process "
                            "(give each gateway process its own WEMCP_GATEWAY_SPOOL_DIR)") from None
        self._lock_fd = fd
        for path in sorted(self.dir.glob("*.seg")):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            seg = Segment(seq, path)
            data = path.read_bytes()
            records, end, bad = parse(data, 0, path.name)
            self.bad += bad
            if end < len(data):
                self.torn += 1
                log.warning("spool_torn_record", segment=path.name, offset=end, bytes=len(data) - end,
                            detail="the last record was cut short (a crash while writing it); skipped")
                with open(path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
            if records or bad:
                seg.size, seg.records = end, len(records)
                self.segments.append(seg)
            else:
                path.unlink(missing_ok=True)
        if self.segments:
            log.info("spool_found", segments=len(self.segments), batches=self.batches, bytes=self.depth_bytes)

    def close(self) -> None:
        self.sync()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        last = self.segments[-1] if self.segments else None
        if last is not None and last.records == 0:
            last.path.unlink(missing_ok=True)
            self.segments.pop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- state ----------------------------------------------------------------------------------------
    @property
    def disk_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def depth_bytes(self) -> int:
        """Bytes not yet published."""
        return sum(s.size - s.consumed for s in self.segments)

    @property
    def batches(self) -> int:
        """Batches on disk, not yet deleted (a partly replayed segment counts whole)."""
        return sum(s.records for s in self.segments)

    @property
    def empty(self) -> bool:
        return all(s.consumed >= s.size for s in self.segments)

    # -- writing --------------------------------------------------------------------------------------
    def append(self, msg_id: str, data: bytes, calls: int) -> bool:
        """Write one batch; False (nothing written) when the spool is full or the disk refuses."""
        rec = encode(msg_id, data, calls)
        if self.disk_bytes + len(rec) > self.max_bytes:
            return False
        seg = self._active(len(rec))
        assert self._fd is not None
        try:
            view = memoryview(rec)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            log.error("spool_write_failed", segment=seg.path.name, error=str(exc))
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, seg.size)
            return False
        seg.size += len(rec)
        seg.records += 1
        self._dirty = True
        return True

    def _active(self, incoming: int) -> Segment:
        last = self.segments[-1] if self.segments else None
        if self._fd is not None and last is not None and last.size + incoming <= self.segment_bytes:
            return last
        if self._fd is not None:  # full: seal it
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        seq = (last.seq + 1) if last is not None else 1
        seg = Segment(seq, self.dir / f"{seq:020d}.seg")
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._sync_dir()
        self.segments.append(seg)
        return seg

    def sync(self) -> None:
        if self._dirty and self._fd is not None:
            os.fsync(self._fd)
        self._dirty = False

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- replay ---------------------------------------------------------------------------------------
    def pending(self) -> tuple[Segment, list[Record]] | None:
        """The oldest segment with unpublished records, and those records (from its replay position)."""
        for seg in list(self.segments):
            if seg.consumed < seg.size:
                with open(seg.path, "rb") as f:
                    f.seek(seg.consumed)
                    data = f.read(seg.size - seg.consumed)
                records, _end, bad = parse(data, 0, seg.path.name)
                for r in records:
                    r.end += seg.consumed
                if not records:  # only bad records left
                    self.bad += bad
                    self.consumed(seg, seg.size)
                    continue
                return seg, records
        return None

    def consumed(self, seg: Segment, offset: int) -> None:
        """Everything of ``seg`` before ``offset`` is published; a segment published to its end is
        deleted (the one being appended to is closed first: the next append opens a new one)."""
        seg.consumed = max(seg.consumed, offset)
        if seg.consumed < seg.size:
            return
        if seg is self.segments[-1] and self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._dirty = False
        seg.path.unlink(missing_ok=True)
        self.segments.remove(seg)
