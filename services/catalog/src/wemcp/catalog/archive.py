"""Checks on an uploaded source archive before anything is stored.

Rejected: entries with absolute paths or ``..`` components, links and device files, more entries
than allowed, and archives whose content expands beyond the limit. The expansion is *measured* by
decompressing in bounded chunks (a zip's declared sizes and a gzip's trailer can lie), so a
decompression bomb costs at most the limit in CPU, never in memory or disk."""

from __future__ import annotations

import hashlib
import io
import posixpath
import tarfile
import zipfile
import zlib
from dataclasses import dataclass

from wemcp.catalog.normalize import field_error

CHUNK = 64 * 1024


@dataclass
class CheckedArchive:
    sha256: str
    size: int
    expanded: int
    entries: int
    format: str


def _check_name(name: str) -> None:
    n = name.replace("\\", "/")
    if n.startswith("/") or (len(n) > 1 and n[1] == ":"):
        raise field_error("archive", f"entry {name[:200]!r} has an absolute path", "unsafe_path")
    if ".." in n.split("/") or posixpath.normpath(n).startswith(".."):
        raise field_error("archive", f"entry {name[:200]!r} escapes the archive (..)", "unsafe_path")


def check_archive(data: bytes, *, max_expanded: int, max_entries: int) -> CheckedArchive:
    if data[:4] == b"PK\x03\x04":
        fmt, count, expanded = "zip", *_check_zip(data, max_expanded, max_entries)
    elif data[:2] == b"\x1f\x8b":
        fmt, count, expanded = "tar.gz", *_check_tar(data, max_expanded, max_entries)
    else:
        raise field_error("archive", "not a .tar.gz or .zip file", "unsupported_format")
    if count == 0:
        raise field_error("archive", "the archive is empty")
    return CheckedArchive(hashlib.sha256(data).hexdigest(), len(data), expanded, count, fmt)


def _too_big(limit: int) -> Exception:
    return field_error("archive", f"the archive expands beyond {limit} bytes", "archive_too_large")


def _check_zip(data: bytes, max_expanded: int, max_entries: int) -> tuple[int, int]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise field_error("archive", "corrupt zip file", "corrupt") from None
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise field_error("archive", f"more than {max_entries} entries", "too_many_entries")
    total = 0
    for info in infos:
        _check_name(info.filename)
        mode = (info.external_attr >> 16) & 0o170000
        if mode and mode not in (0o100000, 0o040000):
            raise field_error("archive", f"entry {info.filename[:200]!r} is a link or special file", "unsafe_entry")
        if info.is_dir():
            continue
        if total + info.file_size > max_expanded:
            raise _too_big(max_expanded)
        try:
            with zf.open(info) as fh:
                while chunk := fh.read(CHUNK):
                    total += len(chunk)
                    if total > max_expanded:
                        raise _too_big(max_expanded)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as exc:
            raise field_error("archive", f"cannot read {info.filename[:200]!r}: {str(exc)[:100]}", "corrupt") from None
    return len(infos), total


def _check_tar(data: bytes, max_expanded: int, max_entries: int) -> tuple[int, int]:
    total = 0
    count = 0
    try:
        # Stream mode: members are read in order and the gzip layer is decompressed as we go.
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tf:
            for member in tf:
                count += 1
                if count > max_entries:
                    raise field_error("archive", f"more than {max_entries} entries", "too_many_entries")
                _check_name(member.name)
                if not (member.isfile() or member.isdir()):
                    raise field_error("archive", f"entry {member.name[:200]!r} is a link or special file",
                                      "unsafe_entry")
                if member.isfile():
                    if total + member.size > max_expanded:
                        raise _too_big(max_expanded)
                    fh = tf.extractfile(member)
                    if fh is not None:
                        while chunk := fh.read(CHUNK):
                            total += len(chunk)
                            if total > max_expanded:
                                raise _too_big(max_expanded)
                # headers and padding count too: a bomb of empty members is still a bomb
                if count * 512 + total > max_expanded:
                    raise _too_big(max_expanded)
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise field_error("archive", f"corrupt tar.gz: {str(exc)[:100]}", "corrupt") from None
    return count, total
