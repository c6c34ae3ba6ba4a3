"""Shared helpers of the catalog tests."""

from __future__ import annotations

import uuid
from typing import Any

from wemcp.devstack.testing import wait_for as _wait_for
from wemcp.testkit.catalog import ADMIN, LOGINS, OTHER, USER, as_admin, as_platform, as_user, publish

# the callers and publish(), shared with the benchmarks, live in the test-support library (wemcp.testkit)
__all__ = ["ADMIN", "LOGINS", "OTHER", "USER", "Registries", "as_admin", "as_platform", "as_user", "npm_submission",
           "publish", "stand_in_registries", "trust", "wait_for"]


async def trust(app: Any, *user_ids: str) -> None:
    """Mark users as trusted publishers (their submissions skip the review queue), as an admin's
    ``PUT /api/v1/admin/publishers/{id}`` does. The catalog tests' own users are trusted: they test
    deployment, not review (test_review.py does)."""
    from sqlalchemy.dialects.postgresql import insert

    from wemcp.catalog.models import Publisher

    async with app.state.runtime.sessions() as s, s.begin():
        for uid in user_ids:
            await s.execute(insert(Publisher).values(user_id=uuid.UUID(uid), trusted=True, note="test fixture")
                            .on_conflict_do_nothing())


async def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.02) -> Any:
    return await _wait_for(predicate, timeout, interval)

def npm_submission(pkg: str = "@acme/weather-mcp", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"mcpServers": {"weather": {"command": "npx", "args": ["-y", f"{pkg}@{version}"],
                                       "env": {"WEATHER_API_KEY": "sk-live-secret-123", "UNITS": "metric"}}},
            **extra}


class Registries:
    """Loopback stand-ins of the npm registry (``GET /<name>/latest``, ``@scope%2fname`` as npm
    escapes it) and PyPI's JSON API (``GET /pypi/<name>/json``), real HTTP servers serving the
    documented shapes. ``latest`` maps ``npm:<name>`` / ``pypi:<name>`` to the version served;
    ``hits`` counts requests; ``down`` makes every answer a 502 (a registry that cannot answer)."""

    def __init__(self, latest: dict[str, str]) -> None:
        self.latest = dict(latest)
        self.hits: list[str] = []
        self.down = False
        self.npm_url = self.pypi_url = ""

    def app(self) -> Any:
        from urllib.parse import unquote

        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        def known(hit: str, key: str, not_found: dict[str, str]) -> str | Response:
            """The version served for ``key``, or the registry's answer when there is none (down, unknown)."""
            self.hits.append(hit)
            if self.down:
                return Response("upstream trouble", status_code=502)
            version = self.latest.get(key)
            return JSONResponse(not_found, status_code=404) if version is None else version

        async def npm(request: Request) -> Response:
            raw = request.scope["raw_path"].decode()  # the escaped name as the client sent it
            name = unquote(raw.removeprefix("/npm/").removesuffix("/latest"))
            version = known(f"npm:{raw}", f"npm:{name}", {"error": "Not found"})
            if isinstance(version, Response):
                return version
            return JSONResponse({"name": name, "version": version, "bin": {name.split("/")[-1]: "index.js"},
                                 "dist": {"tarball": f"http://x/{name}-{version}.tgz"}})

        async def pypi(request: Request) -> Response:
            name = request.path_params["name"]
            version = known(f"pypi:{name}", f"pypi:{name}", {"message": "Not Found"})
            if isinstance(version, Response):
                return version
            return JSONResponse({"info": {"name": name, "version": version, "yanked": False},
                                 "releases": {version: [{"packagetype": "bdist_wheel"}]},
                                 "urls": [{"packagetype": "bdist_wheel",
                                           "filename": f"{name}-{version}-py3-none-any.whl"}]})

        return Starlette(routes=[Route("/pypi/{name}/json", pypi), Route("/npm/{rest:path}", npm)])


def stand_in_registries(**latest: str) -> Any:
    """``async with stand_in_registries(**{"npm:@a/b": "1.0.0"}) as reg``: the stand-ins served on a
    loopback port (``reg.npm_url``, ``reg.pypi_url``)."""
    from contextlib import asynccontextmanager

    from wemcp.devstack.testing import serve_app

    @asynccontextmanager
    async def run() -> Any:
        reg = Registries(latest)
        async with serve_app(reg.app()) as base:
            reg.npm_url, reg.pypi_url = f"{base}/npm", base
            yield reg

    return run()
