"""``GET /api/v1/deployments/{slug}/events``: a deployment followed live (steps, installer and
start-up output redacted, the final state), replayed once finished, resumed with Last-Event-ID, and
readable by the owner and admins only."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2 as httpx

from services.deployer.tests.deployer_testkit import crashing_server, wait_for
from services.deployer.tests.test_service_packages import TIME
from wemcp.common.events.servers import ServerSubmitted
from wemcp.devstack.testing import serve_app
from wemcp.testkit.auth import as_user
from wemcp.testkit.sse import json_events as parse

OWNER = {"id": str(uuid.uuid4()), "role": "user", "login": "stream-owner"}
OTHER = {"id": str(uuid.uuid4()), "role": "user", "login": "stream-other"}
ADMIN = {"id": str(uuid.uuid4()), "role": "admin", "login": "stream-admin"}


async def read_stream(client: httpx.AsyncClient, slug: str, who: dict[str, str],
                      last_event_id: str | None = None, on_first: Any = None) -> list[dict[str, Any]]:
    headers = as_user(who, service="deployer")
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    buf = ""
    async with client.stream("GET", f"/api/v1/deployments/{slug}/events", headers=headers, timeout=300) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for chunk in r.aiter_text():
            buf += chunk
            if on_first is not None and "\n\n" in buf:
                await on_first(parse(buf)[0])
                on_first = None
    return parse(buf)


@asynccontextmanager
async def client_of(h: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The deployer's app over real HTTP on loopback (the ASGI test transport buffers a response
    whole, so it could not show a stream arriving while the deployment runs)."""
    async with serve_app(h.app) as base, httpx.AsyncClient(base_url=base) as c:
        yield c


async def test_a_deployment_is_followed_live_then_replayed_and_resumed(deployer):
    h = deployer
    slots = h.orch._slots
    held = 0
    while not slots.locked():  # the worker claims nothing until released: the stream opens on a queued row
        await slots.acquire()
        held += 1
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="live-time", name="Time", spec=TIME,
                                    owner_id=uuid.UUID(OWNER["id"])))
    await wait_for(lambda: h.deployment("live-time"))
    seen_first: list[dict[str, Any]] = []

    async def release(first: dict[str, Any]) -> None:
        seen_first.append(first)
        for _ in range(held):
            slots.release()
        h.orch.wake()

    async with client_of(h) as c:
        events = await read_stream(c, "live-time", OWNER, on_first=release)
        assert seen_first[0]["event"] == "state" and seen_first[0]["data"]["status"] == "queued"  # live
        kinds = [e["event"] for e in events]
        assert kinds[0] == "state" and kinds[-1] == "done" and kinds.count("done") == 1
        steps = [e["data"]["step"] for e in events if e["event"] == "step"]
        assert steps[0] == "queued" and steps[-1] == "deployed", steps
        for s in ("planning", "installing", "installed", "starting", "introspecting"):
            assert s in steps, steps
        done = events[-1]["data"]
        assert done["status"] == "deployed" and done["package_version"] == TIME["packages"][0]["version"]
        assert set(done["tools"]) == {"get_current_time", "convert_time"}
        assert all(e["id"].startswith(f"{done['generation']}.") for e in events[1:])

        # finished: the same attempt replayed, then the end, at once
        again = await read_stream(c, "live-time", ADMIN)
        assert [e["data"].get("step") for e in again if e["event"] == "step"] == steps
        assert again[-1]["event"] == "done" and again[-1]["data"]["status"] == "deployed"
        # resumed after the third event: only what came after it
        third = events[3]["id"]
        resumed = await read_stream(c, "live-time", OWNER, last_event_id=third)
        assert [e.get("id") for e in resumed[1:]] == [e.get("id") for e in events[4:]]


async def test_install_and_start_up_output_stream_redacted(deployer, tmp_path):
    h = deployer
    # requirements make the installer print (uv's own lines), streamed as "install" output
    spec = crashing_server(tmp_path / "archives", '"loading plugin tiny-weather"',
                           '"Authorization: Bearer sk-live-abcdef1234567890"', requirements=["idna==3.10"])
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="crashy-stream", name="Crashy", spec=spec,
                                    owner_id=uuid.UUID(OWNER["id"])))
    await h.until_status("crashy-stream", "failed", "deployed")
    async with client_of(h) as c:
        events = await read_stream(c, "crashy-stream", OWNER)
    logs = [e["data"] for e in events if e["event"] == "log"]
    server = "\n".join(lg["line"] for lg in logs if lg["source"] == "server")
    assert "loading plugin tiny-weather" in server and "config file /etc/tiny.conf missing" in server, logs
    assert "[redacted]" in server
    assert any(lg["source"] == "install" for lg in logs), logs
    raw = json.dumps(events)
    assert "sk-live-abcdef1234567890" not in raw
    done = events[-1]
    assert done["event"] == "done" and done["data"]["status"] == "failed"
    assert "crashed at start" in done["data"]["reason"]
    # the log lines come before the step that failed
    order = [e["event"] if e["event"] != "step" else e["data"]["step"] for e in events]
    assert order.index("failed") > max(i for i, k in enumerate(order) if k == "log")


async def test_only_the_owner_and_admins_read_the_stream(deployer):
    h = deployer
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="bad-spec", name="Bad", spec={"packages": []},
                                    owner_id=uuid.UUID(OWNER["id"])))
    await h.until_status("bad-spec", "failed")
    async with client_of(h) as c:
        anon = await c.get("/api/v1/deployments/bad-spec/events")
        assert anon.status_code == 401 and anon.headers["content-type"] == "application/problem+json"
        theirs = await c.get("/api/v1/deployments/bad-spec/events", headers=as_user(OTHER, service="deployer"))
        missing = await c.get("/api/v1/deployments/nope/events", headers=as_user(OTHER, service="deployer"))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["detail"].replace("bad-spec", "X") == missing.json()["detail"].replace("nope", "X")
        for reader in (OWNER, ADMIN):
            events = await read_stream(c, "bad-spec", reader)
            assert events[-1]["event"] == "done" and events[-1]["data"]["status"] == "failed"
            assert "nothing to deploy" in events[-1]["data"]["reason"]
