"""Per-user limits on submissions (issue 15, part 5): one user cannot fill the machine with
deployments. A plain user's submissions are counted per rolling hour, and the user's servers being
deployed at once are capped; over either the answer is 429 problem+json with Retry-After. Admins are
exempt (trusted publishers); a new version of a server being deployed replaces that deployment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio
from sqlalchemy import update

from services.catalog.tests.catalog_helpers import ADMIN, OTHER, USER, as_admin, as_user, npm_submission, trust
from wemcp.catalog.config import Settings
from wemcp.catalog.main import SPEC
from wemcp.catalog.models import Server
from wemcp.common.service import running


@pytest_asyncio.fixture
async def limited(settings_for: Any, clean_db: None, clean_bus: None, request: Any) -> AsyncIterator[tuple[Any, Any]]:
    settings = settings_for(Settings, **request.param)
    async with running(SPEC, settings) as app:
        await trust(app, USER, OTHER)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as client:
            yield app, client


def _pkg(i: int, version: str = "1.0.0") -> dict[str, Any]:
    return npm_submission(f"@acme/limited-{i}", version)


async def _settle(app: Any, status: str = "published") -> None:
    """As if the deployer finished every deployment in flight."""
    async with app.state.runtime.sessions() as s, s.begin():
        await s.execute(update(Server).values(status=status))


@pytest.mark.parametrize("limited", [{"max_submissions_per_hour": 3, "max_deployments_in_flight": 50}], indirect=True)
async def test_submission_rate_per_user_answers_429_with_retry_after(limited):
    app, c = limited
    for i in range(3):
        r = await c.post("/api/v1/servers", json=_pkg(i), headers=as_user(USER))
        assert r.status_code == 202, r.text
    over = await c.post("/api/v1/servers", json=_pkg(3), headers=as_user(USER))
    assert over.status_code == 429, over.text
    assert over.headers["content-type"] == "application/problem+json"
    assert 3500 <= int(over.headers["retry-after"]) <= 3600
    assert over.json()["limit"] == 3 and "in the last hour" in over.json()["detail"]
    # a new version counts as a submission too (each one installs a new version)
    again = await c.post("/api/v1/servers", json=_pkg(0, "1.0.1"), headers=as_user(USER))
    assert again.status_code == 429
    # an identical resubmission is idempotent: not counted, not refused
    same = await c.post("/api/v1/servers", json=_pkg(0), headers=as_user(USER))
    assert same.status_code == 202 and same.json()["duplicate"] is True
    # per user: another user and admins are not affected
    assert (await c.post("/api/v1/servers", json=_pkg(10), headers=as_user(OTHER))).status_code == 202
    for i in range(20, 25):
        assert (await c.post("/api/v1/servers", json=_pkg(i), headers=as_user(ADMIN, "admin"))).status_code == 202
    # nothing of the refused submission was stored
    async with app.state.runtime.sessions() as s:
        from sqlalchemy import select

        names = set((await s.execute(select(Server.package_key))).scalars())
    assert "npm:@acme/limited-3" not in names and len(names) == 9


@pytest.mark.parametrize("limited", [{"max_submissions_per_hour": 50, "max_deployments_in_flight": 2}], indirect=True)
async def test_deployments_in_flight_per_user_are_capped(limited):
    app, c = limited
    for i in range(2):
        assert (await c.post("/api/v1/servers", json=_pkg(i), headers=as_user(USER))).status_code == 202
    over = await c.post("/api/v1/servers", json=_pkg(2), headers=as_user(USER))
    assert over.status_code == 429 and over.headers["retry-after"] == "30", over.text
    assert "still being deployed" in over.json()["detail"] and over.json()["limit"] == 2
    # a new version of a server in flight replaces its deployment: allowed
    assert (await c.post("/api/v1/servers", json=_pkg(0, "2.0.0"), headers=as_user(USER))).status_code == 202
    assert (await c.post("/api/v1/servers", json=_pkg(2), headers=as_admin())).status_code == 202  # admins exempt
    await _settle(app)  # the deployments finished
    assert (await c.post("/api/v1/servers", json=_pkg(3), headers=as_user(USER))).status_code == 202


@pytest.mark.parametrize("limited", [{}], indirect=True)
async def test_network_is_asked_for_explicitly_and_only_for_hosted_servers(limited):
    """``"network": true`` reaches the deployer's spec (it then runs the server behind the egress
    proxy); the default stays off; a remote server has no sandbox to open (422)."""
    import json

    from sqlalchemy import select

    from wemcp.catalog.models import bus_tables

    app, c = limited
    netted = await c.post("/api/v1/servers", json={**_pkg(1), "network": True}, headers=as_user(USER))
    assert netted.status_code == 202, netted.text
    assert (await c.post("/api/v1/servers", json=_pkg(2), headers=as_user(USER))).status_code == 202
    async with app.state.runtime.sessions() as s:
        specs = {r.package_key: r.spec for r in (await s.execute(select(Server))).scalars()}
        events = [json.loads(p) for (p,) in (await s.execute(select(bus_tables.outbox.c.payload)
                                                                .order_by(bus_tables.outbox.c.id))).all()]
    assert specs["npm:@acme/limited-1"]["network"] is True and "network" not in specs["npm:@acme/limited-2"]
    assert [e["spec"].get("network") for e in events] == [True, None]
    remote = {"mcpServers": {"far": {"url": "https://mcp.example.com/mcp"}}, "network": True}
    r = await c.post("/api/v1/servers", json=remote, headers=as_user(USER))
    assert r.status_code == 422 and "only hosted servers" in r.json()["detail"], r.text
