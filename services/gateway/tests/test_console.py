"""The web console's files, as the gateway serves them at / (the browser walk is in tests/console)."""

from __future__ import annotations

import re

import httpx2 as httpx
import pytest

from services.gateway.tests.gateway_testkit import stack  # noqa: F401  (fixture)

pytestmark = pytest.mark.asyncio


async def test_pages_are_the_console_with_a_strict_policy(stack) -> None:  # noqa: F811
    async with httpx.AsyncClient(base_url=stack.url) as c:
        for path in ("/", "/servers/time", "/guide", "/guide/sdks", "/invite"):
            r = await c.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["cache-control"] == "no-cache"
            assert '<main id="main"' in r.text
        # everything the page loads comes from this origin, by content-hashed URL
        page = (await c.get("/")).text
        refs = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert refs and all(ref.startswith(("/", "#")) for ref in refs), refs
        for ref in (x for x in refs if x.startswith("/assets/")):
            a = await c.get(ref)
            assert a.status_code == 200, ref
            assert "immutable" in a.headers["cache-control"]


async def test_assets_cannot_leave_their_folder(stack) -> None:  # noqa: F811
    async with httpx.AsyncClient(base_url=stack.url) as c:
        for path in ("/assets/../index.html", "/assets/%2e%2e/%2e%2e/pyproject.toml", "/assets/nope.js",
                     "/assets/..%2f..%2fpackage.json"):
            r = await c.get(path)
            assert r.status_code in (400, 404), (path, r.status_code)
            assert r.headers["content-type"].startswith("application/problem+json"), path
        # a path that is neither a console page nor an API is not answered with the page
        r = await c.get("/no-such-page")
        assert r.status_code == 404


async def test_guide_and_api_reference_need_no_internet(stack) -> None:  # noqa: F811
    async with httpx.AsyncClient(base_url=stack.url) as c:
        index = (await c.get("/assets/guide/index.json")).json()
        assert next(p["file"] for p in index["pages"]) == "getting-started.md"
        for p in index["pages"]:
            r = await c.get(f"/assets/guide/{p['file']}")
            assert r.status_code == 200 and r.text.startswith("# "), p
        docs = (await c.get("/docs")).text
        assert "cdn." not in docs and "https://" not in docs.split("<body>")[0]
        assets = re.findall(r'(?:src|href)="(/assets/swagger/[^"]+)"', docs)
        assert len(assets) >= 2, docs
        for asset in assets:
            assert (await c.get(asset)).status_code == 200, asset
