"""Unpinned packages resolved at submission time: ``npx -y @scope/pkg``, ``uvx pkg``, ``pkg@latest``
and server.json packages without a version become the latest release the registry names, recorded as
the exact version in the spec (``packages[i].version``, and ``resolved`` says what was asked and when).

Where: the registries this machine installs from (``wemcp.common.netpolicy.registry_urls``: pip/uv
index URLs, the npm registry of .npmrc/``npm_config_registry``), unless the catalog's settings name
others (``WEMCP_CATALOG_NPM_REGISTRY``, ``WEMCP_CATALOG_PYPI_URL``).

- npm: ``GET <registry>/<name>/latest`` (``@scope%2fname``), the version document of the ``latest``
  dist-tag; ``version``.
- PyPI: ``GET <base>/pypi/<name>/json`` (the JSON API; ``<base>`` is the index URL without
  ``/simple``), ``info.version`` — the newest release that is not a pre-release.

Every request goes through the egress policy's client (the registries are allowed by name), bounded
in time and size. Answers are cached (``resolve_cache_seconds``, at most ``MAX_CACHED`` names, oldest
out first), so a burst of submissions of one package asks once; after the TTL a resubmission sees a
newer release. A package the registry does not know is a 422 naming it; a registry that cannot be
reached or answers nonsense is a 503 (the submission can be retried), never a 500.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx2 as httpx

from wemcp.catalog.normalize import Normalized, field_error
from wemcp.common.errors import ServiceUnavailable
from wemcp.common.events.spec import NPM_NAME, PYPI_NAME, VERSION
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import EgressPolicy, refusal_in, registry_urls

log = get_logger("wemcp.catalog.resolve")
MAX_CACHED = 1024
MAX_DOCUMENT_BYTES = 16_000_000  # PyPI's JSON for a project with thousands of releases is a few MB
_EXTRAS = re.compile(r"\[.*\]$")


def default_registries() -> tuple[str, str]:
    """(npm registry URL, PyPI JSON API base) from this machine's installer configuration."""
    urls = registry_urls()
    npm = urls["npm"][0]
    pypi = next((u for u in urls["pypi"] if urlsplit(u).scheme in ("http", "https")
                 and urlsplit(u).hostname != "files.pythonhosted.org"), "https://pypi.org/simple")
    return npm, pypi_base(pypi)


def pypi_base(index_url: str) -> str:
    """The JSON API base of a PEP 503 index URL (``https://pypi.org/simple/`` → ``https://pypi.org``)."""
    base = index_url.rstrip("/")
    return base.removesuffix("/simple").rstrip("/")


class Resolver:
    """Latest releases from the npm registry and PyPI, cached. One per catalog process."""

    def __init__(self, egress: EgressPolicy, *, npm_registry: str | None = None, pypi_url: str | None = None,
                 ttl: float = 60.0, timeout: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        npm_default, pypi_default = default_registries() if not (npm_registry and pypi_url) else ("", "")
        self.npm = (npm_registry or npm_default).rstrip("/")
        self.pypi = (pypi_url or pypi_default).rstrip("/")
        self.egress, self.ttl, self.timeout, self.clock = egress, ttl, timeout, clock
        # .npmrc's @scope:registry lines, unless a registry was named for this catalog
        self.npm_scopes = {} if npm_registry else {
            k.removeprefix("npm:"): v[0].rstrip("/") for k, v in registry_urls().items() if k.startswith("npm:") and v}
        self._cache: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self.lookups = 0  # requests actually sent (the cache's effect is visible in tests and the bench)
        # one client for the process: TLS set up once, connections to the registries kept alive
        # (the policy checks each new connection as it opens)
        self._client: Any = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def latest(self, registry: str, identifier: str, where: str) -> str:
        """The latest release of ``identifier`` on ``registry`` (npm | pypi). 422 (``field`` =
        ``where``) when the registry does not know it, 503 when it cannot say."""
        name = identifier if registry == "npm" else _EXTRAS.sub("", identifier)
        # what the registries accept (and the deployer installs): anything else is refused before asking
        valid = {"npm": NPM_NAME, "pypi": PYPI_NAME}.get(registry)
        if valid is not None and (len(name) > 214 or not valid.match(name)):
            raise field_error(where, f"{identifier!r} is not a valid {'npm' if registry == 'npm' else 'PyPI'} "
                              "package name", "invalid_package_name")
        key = (registry, name.lower() if registry == "npm" else re.sub(r"[-_.]+", "-", name).lower())
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1]
        if registry == "npm":
            version = await self._npm(name, where)
        elif registry == "pypi":
            version = await self._pypi(name, where)
        else:
            raise field_error(where, f"pin the image tag of {identifier!r} (e.g. {identifier}:1.2.0); only npm and "
                              "PyPI packages are resolved to their latest release", "missing_version")
        if self.ttl > 0:
            self._cache[key] = (now + self.ttl, version)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        return version

    async def _npm(self, name: str, where: str) -> str:
        escaped = quote(name, safe="@") if not name.startswith("@") else "@" + quote(name[1:], safe="")
        registry = self._npm_registry_for(name)
        doc = await self._get_json(f"{registry}/{escaped}/latest", "npm", name, where)
        version = doc.get("version") if isinstance(doc, dict) else None
        return self._checked(version, "npm", name)

    def _npm_registry_for(self, name: str) -> str:
        return self.npm_scopes.get(name.split("/", 1)[0], self.npm) if name.startswith("@") else self.npm

    async def _pypi(self, name: str, where: str) -> str:
        canonical = re.sub(r"[-_.]+", "-", name).lower()  # PyPI redirects other spellings; redirects are not followed
        doc = await self._get_json(f"{self.pypi}/pypi/{quote(canonical, safe='')}/json", "PyPI", name, where)
        info = doc.get("info") if isinstance(doc, dict) else None
        version = info.get("version") if isinstance(info, dict) else None
        return self._checked(version, "PyPI", name)

    def _checked(self, version: Any, label: str, name: str) -> str:
        if not isinstance(version, str) or not VERSION.match(version):
            raise ServiceUnavailable(f"the {label} registry answered no usable latest version for {name!r}; "
                                     "try again, or pin the version")
        return version

    async def _get_json(self, url: str, label: str, name: str, where: str) -> Any:
        import json

        self.lookups += 1
        host = urlsplit(url).hostname or url
        try:
            if self._client is None:
                self._client = self.egress.client(timeout=self.timeout, limits=httpx.Limits(
                    max_connections=20, max_keepalive_connections=4, keepalive_expiry=30))
            async with self._client.stream("GET", url, headers={"Accept": "application/json"}) as r:
                if r.status_code == 404:
                    raise field_error(where, f"{label} package {name!r} does not exist in the registry "
                                      f"({host}); check the name", "package_not_found")
                if r.status_code in (400, 405, 414):  # the registry refuses the name itself
                    raise field_error(where, f"the {label} registry ({host}) does not accept the name {name!r} "
                                      f"(HTTP {r.status_code})", "package_not_found")
                if r.status_code != 200:
                    log.warning("registry_answered", registry=host, status=r.status_code, package=name)
                    raise ServiceUnavailable(f"the {label} registry ({host}) answered HTTP {r.status_code} for "
                                             f"{name!r}; try again later, or pin the version",
                                             headers={"Retry-After": "30"})
                buf = bytearray()
                async for chunk in r.aiter_bytes():
                    buf += chunk
                    if len(buf) > MAX_DOCUMENT_BYTES:
                        raise ServiceUnavailable(f"the {label} registry's answer for {name!r} is too large; "
                                                 "pin the version")
        except httpx.HTTPError as exc:
            refused = refusal_in(exc)
            log.warning("registry_unreachable", registry=host, package=name, error=type(exc).__name__,
                        refused=bool(refused))
            raise ServiceUnavailable(f"the {label} registry ({host}) cannot be reached ({type(exc).__name__}) to "
                                     f"resolve {name!r}; try again later, or pin the version",
                                     headers={"Retry-After": "30"}) from None
        try:
            return json.loads(bytes(buf))
        except ValueError:
            raise ServiceUnavailable(f"the {label} registry ({host}) answered something that is not JSON for "
                                     f"{name!r}") from None


async def resolve_unpinned(n: Normalized, resolver: Resolver) -> None:
    """Pin every package of ``n`` that came without a version to its latest release (in place); the
    server's version is the first package's when the submission gave none."""
    if not n.unresolved:
        return
    resolved = []
    for where, pkg in n.unresolved:
        version = await resolver.latest(pkg["registryType"], pkg["identifier"], where)
        pkg["version"] = version
        resolved.append({"registryType": pkg["registryType"], "identifier": pkg["identifier"],
                         "requested": "latest", "version": version,
                         "at": datetime.now(UTC).replace(microsecond=0).isoformat()})
    n.unresolved = []
    n.spec["resolved"] = resolved
    if not n.version:
        n.version = n.spec["version"] = n.spec["packages"][0]["version"]
