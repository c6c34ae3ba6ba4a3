"""The one typed client for source archives by content address.

Users upload source archives to the catalog, which checks them (``wemcp.common.archives``) and keeps
the bytes in its own schema; a ``server.submitted`` spec names the archive by its sha256 only
(``archive.sha256``). A reader — the deployer, which extracts and runs it — fetches the bytes with
``ArchiveClient.fetch`` from the catalog's internal route ``GET /internal/archives/{sha256}``, which
answers only callers holding the platform's service credential (``wemcp.common.trust``).

The address is the check: the client streams the answer into a temporary file beside the store,
hashing and counting as it goes, stops as soon as it passes ``max_bytes`` (a declared
``Content-Length`` above the bound is refused before any body is read), refuses bytes whose sha256
is not the address asked for (a tampered or mixed-up answer never reaches the store), and only then
moves the file into place atomically as ``<store>/<sha256>.<tar.gz|zip>`` (the format from its magic,
with the strict reader's polyglot checks). Nothing partial is ever visible under the final name.

Why a client and not a shared store: the deployer and the catalog are separate pods under
Kubernetes (no shared volume), the catalog owns the bytes (one owner per table, docs/architecture.md
§1), and a content address makes the transport itself untrusted-safe; the deployer keeps what it
fetched in its own archive store, so an archive crosses the network once per deployer volume.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx2 as httpx

from wemcp.common.archives import ArchiveRefused, detect_format
from wemcp.common.events.spec import SHA256

ROUTE = "/internal/archives/{sha256}"
CHUNK = 64 * 1024
FORMATS = (".tar.gz", ".tgz", ".zip")


class ArchiveFetchError(Exception):
    """An archive could not be handed over; the message says what to do (upload again, retry)."""


class ArchiveNotFound(ArchiveFetchError):
    """The store has no archive at that address."""


class ArchiveUnavailable(ArchiveFetchError):
    """The store could not be reached or answered an error: try again later."""


class ArchiveTampered(ArchiveFetchError):
    """The bytes received do not hash to the address asked for."""


class ArchiveTooLarge(ArchiveFetchError):
    """The archive is larger than the reader accepts."""


class ArchiveRefusedFormat(ArchiveFetchError):
    """The bytes are not one plain .tar.gz or .zip (the strict reader's format checks)."""


def check_address(sha256: str) -> str:
    if not isinstance(sha256, str) or not SHA256.match(sha256):
        raise ValueError("an archive address is 64 lowercase hex digits (its sha256)")
    return sha256


def stored_file(store: Path, sha256: str) -> Path | None:
    """The store's file for an address, whichever accepted format it is."""
    for ext in FORMATS:
        if (path := store / f"{sha256}{ext}").exists():
            return path
    return None


class ArchiveClient:
    """Fetches archives from the catalog by content address into a local store.

    ``credential``: returns the headers that carry the caller's service credential for the catalog
    (e.g. ``lambda: issuer.headers("catalog")``; called per request, so a minted assertion is never
    stale). ``client``: an ``httpx.AsyncClient`` to use instead of one per fetch (tests, pooling)."""

    def __init__(self, base_url: str, *, credential: Callable[[], Mapping[str, str]] | None = None,
                 max_bytes: int = 50 * 1024 * 1024, timeout: float = 60.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._client = client

    def url(self, sha256: str) -> str:
        return self.base_url + ROUTE.format(sha256=check_address(sha256))

    async def fetch(self, sha256: str, store: Path) -> Path:
        """The archive at ``sha256`` as a file in ``store`` (fetched unless it is there already).
        Raises an ``ArchiveFetchError`` subclass; ``ValueError`` for an address that is not one."""
        url = self.url(sha256)
        if (have := stored_file(store, sha256)) is not None:
            return have
        await asyncio.to_thread(store.mkdir, parents=True, exist_ok=True)
        tmp = store / f".{sha256}.{uuid.uuid4().hex}.part"
        try:
            await self._download(url, sha256, tmp)
            try:  # the strict reader's format checks (magic at offset 0, no polyglots)
                ext = "." + await asyncio.to_thread(_format_of, tmp)
            except ArchiveRefused as exc:
                raise ArchiveRefusedFormat(f"the uploaded archive is refused: {exc}") from None
            final = store / f"{sha256}{ext}"
            await asyncio.to_thread(tmp.replace, final)
            return final
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)

    async def _download(self, url: str, sha256: str, tmp: Path) -> None:
        headers = dict(self.credential()) if self.credential is not None else {}
        client = self._client or httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=5.0))
        digest, size = hashlib.sha256(), 0
        try:
            async with client.stream("GET", url, headers=headers) as r:
                if r.status_code == 404:
                    raise ArchiveNotFound(f"no uploaded archive with sha256 {sha256}; upload it again")
                if r.status_code != 200:
                    raise ArchiveUnavailable(f"the catalog answered {r.status_code} for archive {sha256[:12]}; "
                                             "try again")
                declared = _int(r.headers.get("content-length"))
                if declared is not None and declared > self.max_bytes:
                    raise ArchiveTooLarge(f"the archive is larger than {self.max_bytes // 2**20} MiB")
                out = await asyncio.to_thread(tmp.open, "wb")
                try:
                    async for chunk in r.aiter_bytes(CHUNK):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise ArchiveTooLarge(f"the archive is larger than {self.max_bytes // 2**20} MiB")
                        digest.update(chunk)
                        out.write(chunk)
                finally:
                    out.close()
        except httpx.HTTPError as exc:
            raise ArchiveUnavailable(f"the catalog did not hand over archive {sha256[:12]} "
                                     f"({type(exc).__name__}); try again") from None
        finally:
            if self._client is None:
                await client.aclose()
        if digest.hexdigest() != sha256:
            raise ArchiveTampered("the uploaded archive does not match its sha256; upload it again")


def _format_of(path: Path) -> str:
    return detect_format(path.read_bytes())


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None
