"""The three discovery sources, each read one page at a time from a position that can be stored
(``crawl_state.cursor``) and resumed:

- ``registry``: the official MCP registry API, ``GET /v0.1/servers?limit&cursor&updated_since``
  (``{"servers": [{"server": <server.json>, "_meta": {...official: {status, isLatest, updatedAt}}}],
  "metadata": {"nextCursor", "count"}}``) — the same shape the catalog serves.
- ``npm``: npm's search API, ``GET /-/v1/search?text&size&from`` (``{"objects": [{"package": {name,
  version, description, keywords, date, links}}], "total"}``), one walk per configured query.
- ``pypi``: PyPI's JSON API by name, ``GET /pypi/<name>/json`` (``{"info": {name, version, summary,
  project_urls}}``): the configured names plus the PyPI packages registry entries name.

Every request goes through the egress policy's client (``settings.egress``), at most one per
``crawl_request_interval_seconds`` per source; 429 and 5xx answers and transport errors are retried
with backoff (a ``Retry-After`` is honoured, up to a minute).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
from pydantic import ValidationError

from wemcp.common.events.spec import ServerSpec
from wemcp.common.netpolicy import refusal_in

SERVER_JSON_KEYS = ("name", "title", "description", "version", "websiteUrl", "repository", "packages", "remotes")
OFFICIAL_META = "io.modelcontextprotocol.registry/official"
NPM_PAGE = 250  # the search API's largest page


class FetchError(Exception):
    """A page could not be fetched (after retries): the run stops and resumes there next time."""


class NotFound(Exception):
    pass


@dataclass
class Found:
    """One package a source found, as the catalog will import it."""

    key: str  # the catalog's package key: "npm:<name>", "pypi:<name>", "oci:<image>", "remote:<url>"
    name: str
    version: str | None
    description: str
    server_json: dict[str, Any]
    pypi_name: str | None = None  # a registry entry's PyPI package (the pypi source looks it up)
    updated_at: datetime | None = None

    @property
    def fingerprint(self) -> str:
        raw = json.dumps(self.server_json, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class Page:
    items: list[Found]
    next: dict[str, Any] | None  # None: the walk is complete
    errors: list[str] = field(default_factory=list)  # entries skipped (malformed, missing)


def package_key(doc: dict[str, Any]) -> str | None:
    """As the catalog keys a server.json (``ServerSpec.package_key``): its first package, else its
    first remote; None for an entry that is not a spec (it is skipped as malformed)."""
    try:
        spec = ServerSpec.model_validate(doc)
    except ValidationError:
        return None
    return spec.package_key if spec.packages or spec.remotes else None


def registry_name(registry: str, identifier: str) -> str:
    """A registry-style name for a package found outside the registry (as the catalog names imports)."""
    base = re.sub(r"[^a-z0-9._-]+", "-", identifier.lstrip("@").replace("/", "-").lower()).strip("-._")[:100]
    return {"npm": "com.npmjs", "pypi": "org.pypi"}[registry] + "/" + (base or "server")


class Fetcher:
    """GETs JSON for one source: rate-limited, retried, bounded in size and time."""

    def __init__(self, client: Any, *, interval: float, retries: int, max_bytes: int) -> None:
        self.client, self.interval, self.retries, self.max_bytes = client, interval, retries, max_bytes
        self._next_at = 0.0
        self.requests = 0

    async def _pace(self) -> None:
        now = time.monotonic()
        if self._next_at > now:
            await asyncio.sleep(self._next_at - now)
        self._next_at = time.monotonic() + self.interval

    async def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        last = ""
        for attempt in range(self.retries + 1):
            await self._pace()
            self.requests += 1
            try:
                async with self.client.stream("GET", url, params=params, headers={"Accept": "application/json"}) as r:
                    if r.status_code == 404:
                        raise NotFound(url)
                    if r.status_code == 429 or r.status_code >= 500:
                        last = f"HTTP {r.status_code} from {url}"
                        wait = _retry_after(r.headers.get("retry-after"), attempt)
                        if attempt < self.retries:
                            await asyncio.sleep(wait)
                        continue
                    if r.status_code != 200:
                        raise FetchError(f"HTTP {r.status_code} from {url}")
                    buf = bytearray()
                    async for chunk in r.aiter_bytes():
                        buf += chunk
                        if len(buf) > self.max_bytes:
                            raise FetchError(f"{url}: answer larger than {self.max_bytes} bytes")
            except httpx.HTTPError as exc:
                refused = refusal_in(exc)
                if refused is not None:
                    raise FetchError(f"{url}: {refused}") from None
                last = f"{type(exc).__name__} fetching {url}"
                if attempt < self.retries:
                    await asyncio.sleep(_retry_after(None, attempt))
                continue
            try:
                return json.loads(buf)
            except ValueError:
                raise FetchError(f"{url}: the answer is not JSON") from None
        raise FetchError(last or f"cannot fetch {url}")


def _retry_after(header: str | None, attempt: int) -> float:
    if header:
        try:
            return min(max(float(header), 0.0), 60.0)
        except ValueError:
            pass
    return min(0.5 * 2**attempt, 30.0)


# ---- registry ------------------------------------------------------------------------------------


def registry_item(entry: Any) -> Found | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("server"), dict):
        return None
    server = entry["server"]
    meta = (entry.get("_meta") or {}).get(OFFICIAL_META) or {}
    if meta.get("status", "active") != "active" or meta.get("isLatest") is False:
        return None  # deleted/deprecated entries and older versions are not listed
    doc = {k: server[k] for k in SERVER_JSON_KEYS if k in server}
    if isinstance(doc.get("description"), str):
        doc["description"] = doc["description"][:2000]
    key = package_key(doc)
    if key is None or not isinstance(doc.get("name"), str):
        return None
    pypi = next(
        (
            p.get("identifier")
            for p in doc.get("packages") or []
            if isinstance(p, dict) and p.get("registryType") == "pypi"
        ),
        None,
    )
    updated = meta.get("updatedAt") or meta.get("publishedAt")
    return Found(
        key=key,
        name=doc["name"],
        version=doc.get("version"),
        description=doc.get("description") or "",
        server_json=doc,
        pypi_name=pypi,
        updated_at=_parse_time(updated),
    )


async def registry_page(
    f: Fetcher, base: str, position: dict[str, Any] | None, since: datetime | None, page_size: int
) -> Page:
    params: dict[str, Any] = {"limit": page_size}
    if position and position.get("cursor"):
        params["cursor"] = position["cursor"]
    if since is not None:
        params["updated_since"] = since.isoformat().replace("+00:00", "Z")
    data = await f.get_json(f"{base.rstrip('/')}/v0.1/servers", params)
    if not isinstance(data, dict) or not isinstance(data.get("servers"), list):
        raise FetchError("the registry answered something that is not a /v0.1/servers page")
    # inactive (deleted, deprecated) entries and older versions are skipped, not errors
    items = [x for x in (registry_item(e) for e in data["servers"]) if x is not None]
    nxt = (data.get("metadata") or {}).get("nextCursor")
    return Page(items, {"cursor": nxt} if nxt else None)


# ---- npm and PyPI: one stdio package each --------------------------------------------------------


def _stdio_package(registry: str, obj: Any, part: str, summary: str) -> tuple[dict[str, Any], Found] | None:
    """An npm search hit's ``package`` or a PyPI answer's ``info`` (``obj[part]``) with a string name and
    version, and the package found: one stdio package of ``registry``, described by its ``summary``
    field (the caller adds what else it knows to its ``server_json``). None: ``obj`` holds no such part."""
    meta = obj.get(part) if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not isinstance(meta.get("version"), str):
        return None
    name, version = meta["name"], meta["version"]
    description = str(meta.get(summary) or "")[:2000]
    doc: dict[str, Any] = {
        "name": registry_name(registry, name),
        "title": name[:100],
        "description": description,
        "version": version,
        "packages": [
            {"registryType": registry, "identifier": name, "version": version, "transport": {"type": "stdio"}}
        ],
    }
    return meta, Found(
        key=f"{registry}:{name}", name=doc["name"], version=version, description=description, server_json=doc
    )


# ---- npm -----------------------------------------------------------------------------------------


def npm_item(obj: Any) -> Found | None:
    got = _stdio_package("npm", obj, "package", "description")
    if got is None:
        return None
    pkg, found = got
    doc = found.server_json
    links = pkg.get("links") or {}
    if isinstance(links.get("homepage"), str) and links["homepage"].startswith(("http://", "https://")):
        doc["websiteUrl"] = links["homepage"][:500]
    if isinstance(links.get("repository"), str) and links["repository"].startswith("https://"):
        doc["repository"] = {
            "url": links["repository"][:500],
            "source": "github" if "github.com" in links["repository"] else "git",
        }
    found.updated_at = _parse_time(pkg.get("date"))
    return found


async def npm_page(
    f: Fetcher, base: str, queries: list[str], position: dict[str, Any] | None, max_results: int
) -> Page:
    pos = position or {"q": 0, "from": 0}
    qi, offset = int(pos.get("q", 0)), int(pos.get("from", 0))
    if qi >= len(queries):
        return Page([], None)
    size = min(NPM_PAGE, max_results - offset)
    data = await f.get_json(f"{base.rstrip('/')}/-/v1/search", {"text": queries[qi], "size": size, "from": offset})
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        raise FetchError("npm answered something that is not a search result")
    items = [x for x in (npm_item(o) for o in data["objects"]) if x is not None]
    total = int(data.get("total") or 0)
    offset += len(data["objects"])
    if data["objects"] and offset < min(total, max_results):
        return Page(items, {"q": qi, "from": offset})
    return Page(items, {"q": qi + 1, "from": 0} if qi + 1 < len(queries) else None)


# ---- PyPI ----------------------------------------------------------------------------------------


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pypi_item(data: Any) -> Found | None:
    got = _stdio_package("pypi", data, "info", "summary")
    if got is None:
        return None
    info, found = got
    urls = info.get("project_urls") or {}
    home = urls.get("Homepage") or urls.get("homepage") or info.get("home_page")
    if isinstance(home, str) and home.startswith(("http://", "https://")):
        found.server_json["websiteUrl"] = home[:500]
    return found


async def pypi_page(f: Fetcher, base: str, names: list[str], position: dict[str, Any] | None, batch: int = 20) -> Page:
    """``batch`` names per page (one request each); the position is an index into ``names``
    (sorted, so a resumed run continues where it stopped)."""
    start = int((position or {}).get("i", 0))
    items, errors = [], []
    for name in names[start : start + batch]:
        try:
            data = await f.get_json(f"{base.rstrip('/')}/pypi/{quote(name, safe='')}/json")
        except NotFound:
            errors.append(f"PyPI has no package {name!r}")
            continue
        found = pypi_item(data)
        if found is None:
            errors.append(f"PyPI's answer for {name!r} has no name/version")
            continue
        items.append(found)
    end = start + batch
    return Page(items, {"i": end} if end < len(names) else None, errors)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
