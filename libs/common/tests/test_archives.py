"""The strict archive reader (wemcp.common.archives): what real tools produce is read, everything
ambiguous is refused."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from wemcp.common.archives import ArchiveLimits, ArchiveRefused, read_archive

LIMITS = ArchiveLimits(max_expanded=1 << 20, max_entries=100)


def tgz(*members: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def zipped(*files: tuple[str, bytes], streamed: bool = False, zip64: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            if streamed:  # size unknown up front: data descriptors (and zip64 extras when forced)
                with zf.open(name, "w", force_zip64=zip64) as fh:
                    fh.write(data)
            else:  # a fixed timestamp: the same input gives the same bytes
                zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def refused(data: bytes, kind: str) -> str:
    with pytest.raises(ArchiveRefused) as err:
        read_archive(data, LIMITS)
    assert err.value.kind == kind, (kind, err.value.kind, str(err.value))
    return str(err.value)


def test_ordinary_archives_are_read_and_extracted(tmp_path: Path) -> None:
    for data, fmt in ((tgz(("./requirements.txt", b"mcp\n"), ("src/a.py", b"x")), "tar.gz"),
                      (zipped(("requirements.txt", b"mcp\n"), ("src/a.py", b"x")), "zip"),
                      (zipped(("requirements.txt", b"mcp\n"), ("src/a.py", b"x"), streamed=True), "zip"),
                      (zipped(("requirements.txt", b"mcp\n"), ("src/a.py", b"x"), streamed=True, zip64=True), "zip"),
                      (_two_gzip_members(tgz(("requirements.txt", b"mcp\n"), ("src/a.py", b"x"))), "tar.gz")):
        dest = tmp_path / fmt / str(len(data))
        got = read_archive(data, LIMITS, dest=dest, keep=("requirements.txt",))
        assert got.format == fmt and got.files == {"requirements.txt": b"mcp\n"}
        assert (dest / "src" / "a.py").read_bytes() == b"x"
    refused(gzip.compress(b"a" * 600), "corrupt")  # gzip, but not a tar inside


def _two_gzip_members(data: bytes) -> bytes:
    """The same tar.gz split into two gzip members back to back (what `cat a.gz b.gz` makes): one stream."""
    raw = gzip.decompress(data)
    return gzip.compress(raw[:700]) + gzip.compress(raw[700:])


def test_polyglots_and_hidden_data_are_refused() -> None:
    t, z = tgz(("a.py", b"1")), zipped(("a.py", b"2"))
    assert "polyglot" in refused(t + z, "polyglot")
    refused(t + b"junk", "trailing_data")
    refused(t + b"\0" * 10, "trailing_data")
    refused(z + t, "trailing_data")
    refused(z + b"x", "trailing_data")
    refused(b"junk" + z, "unsupported_format")
    # a zip whose first entry's name makes its first 512 bytes a valid tar header
    refused(_zip_that_is_also_a_tar(), "polyglot")
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("a"))
    refused(plain.getvalue(), "unsupported_format")


def _zip_that_is_also_a_tar() -> bytes:
    name_len = 512 - 30
    fields = bytearray(b"a" * name_len)

    def put(at: int, value: bytes) -> None:  # tar offsets; the name starts at byte 30
        fields[at - 30:at - 30 + len(value)] = value

    for at, value in ((100, b"0000644 "), (108, b"0000000 "), (116, b"0000000 "), (124, b"00000000000 "),
                      (136, b"00000000000 "), (148, b"        "), (156, b"0"), (329, b"0000000 "),
                      (337, b"0000000 ")):
        put(at, value)
    header = bytearray(zipped((fields.decode(), b"x"))[:512])
    chk = sum(header[:148]) + 8 * 32 + sum(header[156:512])
    fields[148 - 30:156 - 30] = b"%07o " % chk
    data = zipped((fields.decode(), b"x"))
    assert tarfile.TarInfo.frombuf(data[:512], "utf-8", "surrogateescape")  # really a tar header too
    return data


def test_unsafe_entries_are_refused() -> None:
    refused(tgz(("../x", b"1")), "unsafe_path")
    refused(tgz(("/etc/x", b"1")), "unsafe_path")
    refused(zipped(("..\\x", b"1")), "unsafe_path")
    refused(tgz(("a", b"1"), ("a", b"2")), "duplicate_entry")
    refused(tgz(("a", b"1"), ("a/b", b"2")), "unsafe_entry")
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        info = tarfile.TarInfo("link")
        info.type, info.linkname = kind, "/etc/passwd"
        refused(tgz(info), "unsafe_entry")
    link = zipfile.ZipInfo("link")
    link.external_attr = (0o120777) << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    refused(buf.getvalue(), "unsafe_entry")
    refused(tgz(*[(f"f{i}", b"") for i in range(101)]), "too_many_entries")
    refused(tgz(("big", b"\0" * (2 << 20))), "archive_too_large")
    refused(zipped(("big", b"\0" * (2 << 20))), "archive_too_large")
