"""One strict reader for the source archives users upload (``.tar.gz`` or ``.zip``).

The catalog checks an upload with it and the deployer extracts with it, from the same bytes (the
deployer fetches by sha256 and checks the digest), so what runs is exactly what was checked. Two
readers that each pick a format their own way is how a ``.tar.gz`` with a ``.zip`` appended was checked
as the tar and run as the zip.

Strict means:
- the format comes from the magic at offset 0 (gzip ``1f 8b``, zip ``PK 03 04``), never from a name or
  a content type;
- nothing else hides in the file: a tar.gz is gzip members back to back up to the last byte; a zip's
  local entries, central directory and end record cover the whole file with no gap, nothing before
  the first entry and nothing after the end record's comment;
- a file that also parses as another format (a polyglot: a tar.gz that Python's lenient zip reader
  opens, a zip whose first 512 bytes are a valid tar header...) is refused;
- entries: regular files and directories only (no links, devices, fifos), no absolute paths, no
  ``..``, no duplicate or conflicting names, at most ``max_entries`` of them and at most
  ``max_expanded`` bytes once decompressed. The expansion is *measured* while decompressing in
  bounded chunks (declared sizes can lie), so a bomb costs at most the limit in CPU, never in memory
  or disk.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

CHUNK = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
# Small top-level files a caller may ask to see (requirements.txt, package.json) are kept up to this size.
MAX_KEPT_FILE = 1024 * 1024


class ArchiveRefused(ValueError):
    """The archive is not accepted; ``kind`` is a stable machine-readable reason (``unsafe_path``,
    ``unsafe_entry``, ``polyglot``, ``trailing_data``, ``archive_too_large``, ...)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ArchiveLimits:
    max_expanded: int
    max_entries: int


@dataclass
class ArchiveContents:
    format: str  # "tar.gz" | "zip"
    sha256: str
    size: int
    entries: int
    expanded: int
    # the requested top-level files (``keep``), by name, when present
    files: dict[str, bytes] = field(default_factory=dict)


def _too_big(limit: int) -> ArchiveRefused:
    return ArchiveRefused(f"the archive expands beyond {limit} bytes", "archive_too_large")


def _corrupt(what: str, exc: BaseException | str) -> ArchiveRefused:
    return ArchiveRefused(f"corrupt {what}: {str(exc)[:100]}", "corrupt")


# ---------------------------------------------------------------------------------- format detection

def _is_tar_header(block: bytes) -> bool:
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return False
    return True


def _lenient_zip(data: bytes) -> bool:
    """Would Python's own zip reader (which skips prepended data and tolerates trailing bytes) find
    entries in this file?"""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return bool(zf.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, struct.error):
        return False


def detect_format(data: bytes) -> str:
    """``"tar.gz"`` or ``"zip"`` from the magic at offset 0; refuses anything that also reads as
    another archive format."""
    if data[:2] == GZIP_MAGIC:
        fmt = "tar.gz"
        if _lenient_zip(data):
            raise ArchiveRefused("the file is a tar.gz and also a zip (a polyglot): upload one plain archive",
                                 "polyglot")
    elif data[:4] == ZIP_MAGIC:
        fmt = "zip"
    else:
        raise ArchiveRefused("not a .tar.gz or .zip file", "unsupported_format")
    if _is_tar_header(data):
        raise ArchiveRefused(f"the file is a {fmt} and also a plain tar (a polyglot): upload one plain archive",
                             "polyglot")
    return fmt


# ---------------------------------------------------------------------------------- entries

class _Entries:
    """Name checks shared by both formats, and (optionally) writing the files under ``dest``."""

    def __init__(self, limits: ArchiveLimits, dest: Path | None, keep: Collection[str]) -> None:
        self.limits = limits
        self.dest = dest.resolve() if dest is not None else None
        self.keep = set(keep)
        self.count = 0
        self.expanded = 0
        self.files: set[str] = set()
        self.dirs: set[str] = set()
        self.kept: dict[str, bytes] = {}

    def name(self, raw: str) -> str:
        """The entry's normalised relative path ("" for the root itself)."""
        self.count += 1
        if self.count > self.limits.max_entries:
            raise ArchiveRefused(f"more than {self.limits.max_entries} entries", "too_many_entries")
        n = raw.replace("\\", "/")
        if not n or "\0" in n:
            raise ArchiveRefused(f"entry {raw[:200]!r} has an empty or invalid name", "unsafe_path")
        if n.startswith("/") or (len(n) > 1 and n[1] == ":"):
            raise ArchiveRefused(f"entry {raw[:200]!r} has an absolute path, outside its root", "unsafe_path")
        if ".." in n.split("/"):
            raise ArchiveRefused(f"entry {raw[:200]!r} points outside its root (..)", "unsafe_path")
        norm = posixpath.normpath(n)
        return "" if norm == "." else norm

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent in self.files:
                raise ArchiveRefused(f"entry {name[:200]!r} sits under the file {parent[:200]!r}", "unsafe_entry")
            self.dirs.add(parent)

    def directory(self, name: str) -> None:
        if not name:
            return
        if name in self.files:
            raise ArchiveRefused(f"entry {name[:200]!r} is both a file and a directory", "unsafe_entry")
        self._parents(name)
        self.dirs.add(name)
        if self.dest is not None:
            self._target(name).mkdir(parents=True, exist_ok=True)

    def file(self, name: str, declared: int, stream: IO[bytes]) -> None:
        if not name:
            raise ArchiveRefused("an entry names the archive root as a file", "unsafe_entry")
        if name in self.files or name in self.dirs:
            # two copies of one name: a checker and an extractor could each pick a different one
            raise ArchiveRefused(f"entry {name[:200]!r} appears more than once", "duplicate_entry")
        self._parents(name)
        self.files.add(name)
        limit = self.limits.max_expanded
        if self.expanded + declared > limit:
            raise _too_big(limit)
        keep = name in self.keep
        kept = bytearray()
        out = None
        if self.dest is not None:
            target = self._target(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            out = open(target, "wb")
        try:
            while chunk := stream.read(CHUNK):
                self.expanded += len(chunk)
                if self.expanded > limit:
                    raise _too_big(limit)
                if out is not None:
                    out.write(chunk)
                if keep:
                    kept += chunk
                    if len(kept) > MAX_KEPT_FILE:
                        raise ArchiveRefused(f"{name} is larger than {MAX_KEPT_FILE} bytes", "archive_too_large")
        finally:
            if out is not None:
                out.close()
        if keep:
            self.kept[name] = bytes(kept)

    def _target(self, name: str) -> Path:
        assert self.dest is not None
        target = (self.dest / name).resolve()
        if target != self.dest and self.dest not in target.parents:  # nothing above creates links; belt and braces
            raise ArchiveRefused(f"entry {name[:200]!r} points outside its root", "unsafe_path")
        return target


# ---------------------------------------------------------------------------------- tar.gz

def _gunzip(data: bytes, limit: int) -> Iterator[bytes]:
    """Every gzip member of ``data`` decompressed in bounded chunks; nothing may follow the last one."""
    view = memoryview(data)
    start, total = 0, 0
    while True:
        d = zlib.decompressobj(wbits=31)
        pos, pending = start, b""
        while not d.eof:
            if not pending:
                if pos >= len(data):
                    out = d.decompress(b"", CHUNK)  # output zlib still holds, if any
                    if not out and not d.eof:
                        raise ArchiveRefused("corrupt tar.gz: the gzip stream is truncated", "corrupt")
                else:
                    pending = bytes(view[pos:pos + CHUNK])
                    pos += len(pending)
            if pending:
                out = d.decompress(pending, CHUNK)
                pending = d.unconsumed_tail
            total += len(out)
            if total > limit:
                raise _too_big(limit)
            if out:
                yield out
        start = pos - len(d.unused_data) - len(pending)
        if start == len(data):
            return
        if data[start:start + 2] != GZIP_MAGIC:
            raise ArchiveRefused(f"{len(data) - start} bytes of other data follow the tar.gz", "trailing_data")


class _Reader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.buf:
            nxt = next(self.chunks, None)
            if nxt is None:
                return 0
            self.buf = nxt
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n

    def drain(self) -> None:
        self.buf = b""
        for _ in self.chunks:
            pass


def _read_tar(data: bytes, entries: _Entries) -> None:
    lim = entries.limits
    # headers, padding and the end blocks count towards the decompressed stream's bound too
    raw = _Reader(_gunzip(data, lim.max_expanded + 1024 * (lim.max_entries + 20)))
    try:
        with tarfile.open(fileobj=raw, mode="r|") as tf:  # stream mode: members in order, nothing buffered whole
            for member in tf:
                name = entries.name(member.name)
                if member.isdir():
                    entries.directory(name)
                elif member.isfile():
                    fh = tf.extractfile(member)
                    entries.file(name, member.size, fh if fh is not None else io.BytesIO())
                else:
                    raise ArchiveRefused(f"entry {member.name[:200]!r} is a link or special file", "unsafe_entry")
        raw.drain()  # the rest of the gzip stream: checks its CRC and that nothing follows it
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise _corrupt("tar.gz", exc) from None


# ---------------------------------------------------------------------------------- zip

_EOCD = struct.Struct("<4s4H2LH")  # signature, disk numbers, entry counts, cd size, cd offset, comment length
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")


def _zip_layout(data: bytes) -> tuple[int, int]:
    """(central directory offset, where it must end) from an end record that ends the file exactly."""
    end = len(data)
    for at in range(end - _EOCD.size, max(-1, end - _EOCD.size - 0xFFFF - 1), -1):
        if data[at:at + 4] == b"PK\x05\x06" and at + _EOCD.size + _EOCD.unpack_from(data, at)[-1] == end:
            eocd = at
            break
    else:
        raise ArchiveRefused("other data follow the zip's end record (appended data or a damaged zip)",
                             "trailing_data")
    _, _, _, _, _, cd_size, cd_offset, _ = _EOCD.unpack_from(data, eocd)
    cd_end = eocd
    loc = eocd - _EOCD64_LOCATOR.size
    # zip64 (also written by some tools, e.g. Info-ZIP streaming, when the values would fit): a
    # locator just before the end record, pointing at the zip64 end record, which holds the real values
    if loc >= 0 and data[loc:loc + 4] == b"PK\x06\x07":
        _, _, rec_at, _ = _EOCD64_LOCATOR.unpack_from(data, loc)
        if rec_at + _EOCD64.size > loc or data[rec_at:rec_at + 4] != b"PK\x06\x06":
            raise _corrupt("zip", "bad zip64 end record")
        rec = _EOCD64.unpack_from(data, rec_at)
        if rec_at + 12 + rec[1] != loc:
            raise ArchiveRefused("other data sit inside the zip's end records", "trailing_data")
        cd_size, cd_offset, cd_end = rec[8], rec[9], rec_at
    if cd_offset + cd_size != cd_end:
        raise ArchiveRefused("other data sit in the zip outside its central directory "
                             "(prepended or hidden data)", "trailing_data")
    return cd_offset, cd_end


def _check_zip_coverage(data: bytes, infos: list[zipfile.ZipInfo], cd_offset: int) -> None:
    """Local entries (header, data, descriptor) must tile [0, central directory) exactly."""
    ordered = sorted(infos, key=lambda i: i.header_offset)
    ends = [i.header_offset for i in ordered[1:]] + [cd_offset]
    at = 0
    for info, nxt in zip(ordered, ends, strict=True):
        if info.header_offset != at or data[at:at + 4] != ZIP_MAGIC:
            raise ArchiveRefused("other data sit in the zip outside its entries (prepended, hidden or "
                                 "overlapping)", "trailing_data")
        (flags,) = struct.unpack_from("<H", data, at + 6)
        name_len, extra_len = struct.unpack_from("<2H", data, at + 26)
        at += 30 + name_len + extra_len + info.compress_size
        if flags & 0x08 and at != nxt:  # a data descriptor: optional signature, CRC, 32- or 64-bit sizes
            signed = data[at:at + 4] == b"PK\x07\x08"
            crc_at = at + 4 if signed else at
            if nxt - at not in ((16, 24) if signed else (12, 20)) \
                    or struct.unpack_from("<L", data, crc_at)[0] != info.CRC:
                raise ArchiveRefused("other data sit in the zip outside its entries", "trailing_data")
            at = nxt
    if at != cd_offset:
        raise ArchiveRefused("other data sit between the zip's entries and its central directory",
                             "trailing_data")


def _read_zip(data: bytes, entries: _Entries) -> None:
    cd_offset, _ = _zip_layout(data)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, struct.error) as exc:
        raise _corrupt("zip", exc) from None
    with zf:
        if zf.start_dir != cd_offset:  # Python's reader shifted offsets: data was prepended
            raise ArchiveRefused("other data sit before the zip's first entry", "trailing_data")
        infos = zf.infolist()
        if len(infos) > entries.limits.max_entries:
            raise ArchiveRefused(f"more than {entries.limits.max_entries} entries", "too_many_entries")
        try:
            _check_zip_coverage(data, infos, cd_offset)
        except struct.error:
            raise _corrupt("zip", "a local header is cut short") from None
        for info in infos:
            name = entries.name(info.filename)
            mode = (info.external_attr >> 16) & 0o170000
            if mode and mode not in (0o100000, 0o040000):
                raise ArchiveRefused(f"entry {info.filename[:200]!r} is a link or special file", "unsafe_entry")
            if info.is_dir():
                entries.directory(name)
                continue
            try:
                with zf.open(info) as fh:
                    entries.file(name, info.file_size, fh)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as exc:
                raise _corrupt(f"entry {info.filename[:200]!r}", exc) from None


# ---------------------------------------------------------------------------------- entry point

def read_archive(data: bytes, limits: ArchiveLimits, *, dest: Path | None = None,
                 keep: Collection[str] = ()) -> ArchiveContents:
    """Check ``data`` entry by entry (and, given ``dest``, write its files there as they are read).
    ``keep`` names top-level files whose bytes to return (e.g. ``requirements.txt``). Raises
    ``ArchiveRefused``; a caller that extracted should delete ``dest`` then."""
    fmt = detect_format(data)
    entries = _Entries(limits, dest, keep)
    try:
        (_read_tar if fmt == "tar.gz" else _read_zip)(data, entries)
    except OSError as exc:  # writing under dest failed (e.g. a name the file system refuses)
        raise ArchiveRefused(f"cannot extract the archive: {exc.strerror or exc}", "unsafe_entry") from None
    if not entries.files and not entries.dirs:
        raise ArchiveRefused("the archive is empty", "empty")
    return ArchiveContents(format=fmt, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                           entries=entries.count, expanded=entries.expanded, files=entries.kept)
