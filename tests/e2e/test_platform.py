"""The platform as real processes: health, routing, the public API document, and the lossless event
bus across processes — including a consumer killed with SIGKILL mid-handling and NATS restarted
between the producer's commit and the relay."""

from __future__ import annotations

import time

import httpx2 as httpx
import nats
import pytest

from wemcp.common.trust import platform_headers
from wemcp.devstack.stack import SERVICES, Stack

pytestmark = pytest.mark.e2e

PRODUCER = "goods"     # emits probe events through its outbox
CONSUMER = "crawler"   # consumes them in another process


def wait_until(fn, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout} s; last value: {last!r}")


def emit(stack: Stack, count: int, note: str) -> list[str]:
    r = httpx.post(f"{stack.services[PRODUCER].url}/internal/bus/probes", json={"count": count, "note": note},
                   timeout=10, headers=platform_headers(PRODUCER))
    assert r.status_code == 202, r.text
    return r.json()["event_ids"]


def received(stack: Stack, note: str) -> dict:
    r = httpx.get(f"{stack.services[CONSUMER].url}/internal/bus/probes", params={"note": note}, timeout=10,
                  headers=platform_headers(CONSUMER))
    assert r.status_code == 200, r.text
    return r.json()


def test_healthz_reports_every_service_green(client):
    r = client.get("/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert set(body["services"]) == {*SERVICES, "gateway"}
    for name, report in body["services"].items():
        assert report["status"] == "ok", (name, report)
    assert body["services"]["catalog"]["checks"]["database"]["status"] == "ok"
    assert body["services"]["gateway"]["checks"]["nats"]["status"] == "ok"


@pytest.mark.parametrize("service", SERVICES)
def test_gateway_routes_api_to_owning_service(client, service):
    r = client.get(f"/api/v1/services/{service}")
    assert r.status_code == 200, r.text
    assert r.json()["service"] == service
    assert r.headers["x-request-id"]


def test_unknown_api_area_is_a_problem_404(client):
    r = client.get("/api/v1/no-such-area/x")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 404


def test_one_public_openapi_document_and_docs(client):
    doc = client.get("/openapi.json").json()
    for service in SERVICES:
        assert f"/api/v1/services/{service}" in doc["paths"], service
    assert not any(p.startswith("/internal") for p in doc["paths"])
    assert "x-unavailable-services" not in doc["info"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text


def test_oversized_body_is_refused_at_the_gateway(client):
    r = client.post("/api/v1/services/catalog", content=b"x" * (10 * 1024 * 1024 + 1),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")


def test_event_crosses_processes_exactly_once(stack):
    ids = emit(stack, 25, "cross")
    body = wait_until(lambda: (b := received(stack, "cross"))["count"] >= 25 and b, what="25 receipts")
    assert sorted(i["event_id"] for i in body["items"]) == sorted(ids)
    assert [i["seq"] for i in body["items"]] == list(range(25))


def test_consumer_killed_mid_handling_then_restarted_applies_the_event_once(stack):
    consumer = stack.services[CONSUMER]
    first_pid = consumer.proc.pid
    # the handler holds its transaction open for 4 s: long enough to kill it mid-handling
    [event_id] = emit(stack, 1, "hold:4000")
    wait_until(lambda: _ack_pending(stack, f"{CONSUMER}-probe-recorded") == 1, what="handler in progress")
    consumer.kill()
    assert received_direct(stack, "hold:4000") == 0  # nothing was committed by the killed handler
    stack.restart_service(CONSUMER)
    body = wait_until(lambda: (b := received(stack, "hold:4000"))["count"] >= 1 and b, timeout=30,
                      what="redelivered event handled")
    assert [i["event_id"] for i in body["items"]] == [event_id]
    assert body["items"][0]["pid"] == consumer.proc.pid != first_pid
    time.sleep(2.5)  # one more ack-wait: a second delivery would show up as a second receipt
    assert received(stack, "hold:4000")["count"] == 1


def test_nats_restarted_between_commit_and_relay_loses_nothing(stack):
    assert stack.nats is not None
    stack.nats.stop()
    ids = emit(stack, 10, "nats-down")  # committed to the outbox while NATS is down
    pending = httpx.get(f"{stack.services[PRODUCER].url}/internal/bus/outbox", timeout=10,
                        headers=platform_headers(PRODUCER)).json()["pending"]
    assert pending >= 10
    stack.nats.start()  # same port, same store directory
    body = wait_until(lambda: (b := received(stack, "nats-down"))["count"] >= 10 and b, timeout=45,
                      what="events relayed after NATS came back")
    assert sorted(i["event_id"] for i in body["items"]) == sorted(ids)
    wait_until(lambda: httpx.get(f"{stack.services[PRODUCER].url}/internal/bus/outbox",
                                 headers=platform_headers(PRODUCER)).json()["pending"] == 0,
               what="outbox drained")
    assert client_health(stack)["status"] == "ok"


def client_health(stack: Stack) -> dict:
    return wait_until(lambda: (r := httpx.get(f"http://127.0.0.1:{stack.gateway_port}/healthz", timeout=10))
                      .status_code == 200 and r.json(), timeout=30, what="all green again")


def received_direct(stack: Stack, note: str) -> int:
    import asyncio

    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return await conn.fetchval(f"SELECT count(*) FROM {CONSUMER}.probe_receipts WHERE note = $1", note)
        finally:
            await conn.close()

    return asyncio.run(count())


def _ack_pending(stack: Stack, durable: str) -> int:
    import asyncio

    async def info() -> int:
        nc = await nats.connect(stack.nats_url)
        try:
            return (await nc.jetstream().consumer_info("PROBES", durable)).num_ack_pending
        finally:
            await nc.close()

    return asyncio.run(info())
