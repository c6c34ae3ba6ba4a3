"""Call events survive a broker outage: the spool on disk (format, torn records, order, the lock) and
the recorder against a real NATS that the test stops and starts again (same port, same store)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import nats
import orjson
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from wemcp.common.bus import ensure_streams
from wemcp.devstack.infra import EmbeddedNats, EmbeddedRedis, free_port
from wemcp.devstack.stack import ServiceProcess
from wemcp.devstack.testing import wait_for
from wemcp.gateway.calls import CallRecord, CallRecorder
from wemcp.gateway.spool import Spool, SpoolBusy, encode
from wemcp.testkit.catalog import publish_route
from wemcp.testkit.upstream import serve_upstream


def rec(i: int) -> CallRecord:
    """A call whose ``request_bytes`` is its sequence number (what the assertions count by)."""
    return CallRecord(None, "echo", "tools/call", "echo", "none", True, False, "ok", None, 1.0, i, 0)


def batch(i: int) -> tuple[str, bytes, int]:
    return str(uuid.uuid4()), orjson.dumps({"n": i, "pad": "x" * 200}), i + 1


# -- the spool on its own -------------------------------------------------------------------------------
def test_spool_keeps_order_across_segments_and_restarts(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    spool.open()
    written = [batch(i) for i in range(12)]
    for b in written:
        assert spool.append(*b)
    assert len(spool.segments) > 3 and spool.batches == 12
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    again.open()
    assert again.batches == 12 and again.torn == 0
    last = batch(12)
    assert again.append(*last)  # a new segment: never appends to one of an earlier process
    assert len(again.segments) == len(spool.segments) + 1
    seen = []
    while (found := again.pending()) is not None:
        seg, records = found
        seen += [(r.msg_id, r.data, r.calls) for r in records]
        again.consumed(seg, records[-1].end)
    assert seen == [*written, last]
    assert again.empty and again.segments == [] and list(tmp_path.glob("*.seg")) == []
    again.close()


def test_torn_last_record_and_bad_crc_are_skipped_not_fatal(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    written = [batch(i) for i in range(3)]
    for b in written:
        spool.append(*b)
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    good = seg.stat().st_size
    # a SIGKILL inside write(): only part of the next record reached the file
    with open(seg, "ab") as f:
        f.write(encode(*batch(3))[:40])
    torn = Spool(tmp_path, max_bytes=1 << 20)
    with capture_logs() as logs:
        torn.open()
    assert torn.torn == 1 and torn.batches == 3 and seg.stat().st_size == good  # cut off, the rest kept
    assert [e["event"] for e in logs].count("spool_torn_record") == 1
    _seg, records = torn.pending()  # type: ignore[misc]
    assert [(r.msg_id, r.data, r.calls) for r in records] == written
    torn.close()
    # a flipped byte inside the second record: that one is skipped, the third is kept
    data = bytearray(seg.read_bytes())
    second = len(encode(*written[0]))
    data[second + 20] ^= 0xFF
    seg.write_bytes(bytes(data))
    bad = Spool(tmp_path, max_bytes=1 << 20)
    bad.open()
    _seg, records = bad.pending()  # type: ignore[misc]
    assert [r.msg_id for r in records] == [written[0][0], written[2][0]] and bad.bad == 1
    bad.close()


def test_spool_is_bounded_and_locked(tmp_path):
    spool = Spool(tmp_path, max_bytes=1000)
    spool.open()
    assert spool.append(*batch(0)) and spool.append(*batch(1)) and spool.append(*batch(2))
    assert not spool.append(*batch(3))  # would pass 1000 bytes on disk
    assert spool.batches == 3 and spool.disk_bytes <= 1000
    with pytest.raises(SpoolBusy):
        Spool(tmp_path, max_bytes=1000).open()
    spool.close()
    Spool(tmp_path, max_bytes=1000).open()  # free again once closed


# -- the recorder with a NATS that goes away ------------------------------------------------------------
@pytest_asyncio.fixture
async def own_nats(tmp_path) -> AsyncIterator[EmbeddedNats]:
    """A NATS of this test's own (the session's must stay up for everyone else)."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream())
        await nc.close()
        yield server
    finally:
        server.stop()


async def connect(server: EmbeddedNats) -> Any:
    return await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)


async def stream_calls(server: EmbeddedNats) -> list[dict[str, Any]]:
    """Every call in the CALLS stream, in stream order."""
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("CALLS")
        out: list[dict[str, Any]] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("CALLS", seq)
            out += orjson.loads(msg.data)["calls"]
        return out
    finally:
        await nc.close()


async def record_slowly(recorder: CallRecorder, numbers: range) -> None:
    for i in numbers:
        recorder.record(rec(i))
        if i % 10 == 9:
            await asyncio.sleep(0.005)


async def test_outage_calls_arrive_once_in_order_after_restart(own_nats, tmp_path):
    """NATS stops mid-stream: batches go to the spool (several segments), nothing is dropped; NATS
    back: the spool is replayed in order and emptied; every call is in the stream exactly once, in
    the order recorded."""
    spool = Spool(tmp_path / "spool", max_bytes=10 << 20, segment_bytes=4096)
    spool.open()
    nc = await connect(own_nats)
    recorder = CallRecorder(spool, linger=0.01, spool_linger=0.05, ack_timeout=0.5)
    await recorder.start(nc)
    try:
        await record_slowly(recorder, range(50))
        await wait_for(lambda: recorder.published == 50)
        own_nats.stop()
        await wait_for(lambda: not nc.is_connected)
        await record_slowly(recorder, range(50, 350))
        await wait_for(lambda: recorder.spooled == 300)
        assert recorder.dropped == 0 and recorder.published == 50 and len(spool.segments) > 1
        own_nats.start()
        await wait_for(lambda: recorder.published == 350, timeout=30)
        await wait_for(lambda: spool.empty and not spool.segments)
        assert recorder.replayed == 300 and list((tmp_path / "spool").glob("*.seg")) == []
        calls = await stream_calls(own_nats)
        assert [c["request_bytes"] for c in calls] == list(range(350))  # once each, in order
        assert len({c["event_id"] for c in calls}) == 350
    finally:
        await recorder.stop()
        spool.close()
        await nc.close()


async def test_full_spool_drops_counts_logs_once_and_keeps_the_rest(own_nats, tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=6 * 1024)
    spool.open()
    nc = await connect(own_nats)
    recorder = CallRecorder(spool, linger=0.01, spool_linger=0.05, ack_timeout=0.5, max_calls=5)
    await recorder.start(nc)
    try:
        own_nats.stop()
        await wait_for(lambda: not nc.is_connected)
        with capture_logs() as logs:
            await record_slowly(recorder, range(100))
            await wait_for(lambda: recorder.spooled + recorder.dropped == 100)
        assert recorder.dropped > 0 and 0 < recorder.spooled < 100 and spool.disk_bytes <= 6 * 1024
        assert [e["event"] for e in logs].count("call_events_dropped") == 1  # one line for the episode
        kept = recorder.spooled
        own_nats.start()
        await wait_for(lambda: recorder.published == kept and spool.empty, timeout=30)
        calls = await stream_calls(own_nats)
        assert len(calls) == kept == len({c["request_bytes"] for c in calls})
        # room again: the next batches are spooled, and the episode's end is logged with its total
        own_nats.stop()
        await wait_for(lambda: not nc.is_connected)
        with capture_logs() as logs:
            recorder.record(rec(1000))
            await wait_for(lambda: recorder.spooled == kept + 1)
        ended = [e for e in logs if e["event"] == "call_events_dropping_ended"]
        assert len(ended) == 1 and ended[0]["dropped"] == recorder.dropped
    finally:
        await recorder.stop()
        spool.close()
        await nc.close()


async def test_stop_spills_what_it_cannot_publish_and_a_new_recorder_replays_it(own_nats, tmp_path):
    """SIGTERM while NATS is away: stop() spools the gathered calls (bounded time, nothing lost); a
    recorder started later on the same directory replays them, skipping a torn record left by a
    crash."""
    spool = Spool(tmp_path / "spool", max_bytes=10 << 20)
    spool.open()
    nc = await connect(own_nats)
    recorder = CallRecorder(spool, linger=5.0, ack_timeout=0.5, drain_seconds=1.0)  # nothing leaves before stop
    await recorder.start(nc)
    own_nats.stop()
    await wait_for(lambda: not nc.is_connected)
    for i in range(40):
        recorder.record(rec(i))
    await recorder.stop()
    spool.close()
    await nc.close()
    assert recorder.spooled == 40 and recorder.dropped == 0
    seg = next((tmp_path / "spool").glob("*.seg"))
    with open(seg, "ab") as f:  # a later crash left half a record behind
        f.write(encode(*batch(0))[:30])
    own_nats.start()
    spool = Spool(tmp_path / "spool", max_bytes=10 << 20)
    spool.open()
    assert spool.torn == 1
    nc = await connect(own_nats)
    recorder = CallRecorder(spool)
    await recorder.start(nc)
    try:
        await wait_for(lambda: recorder.replayed == 40, timeout=20)
        calls = await stream_calls(own_nats)
        assert sorted(c["request_bytes"] for c in calls) == list(range(40))
    finally:
        await recorder.stop()
        spool.close()
        await nc.close()


async def test_stop_publishes_gathered_calls_when_nats_is_up(own_nats, tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=10 << 20)
    spool.open()
    nc = await connect(own_nats)
    recorder = CallRecorder(spool, linger=5.0)  # still gathering when stop() comes
    await recorder.start(nc)
    try:
        for i in range(30):
            recorder.record(rec(i))
    finally:
        await recorder.stop()
        spool.close()
        await nc.close()
    assert recorder.published == 30 and recorder.spooled == 0
    assert sorted(c["request_bytes"] for c in await stream_calls(own_nats)) == list(range(30))


async def test_a_batch_filled_while_one_is_in_flight_goes_to_the_spool(own_nats, tmp_path):
    """Memory holds one unacknowledged batch and the calls gathering for the next: a batch that
    fills while the first still waits for its acknowledgement is spooled at once, and the first,
    never acknowledged, is spooled after its time-out; all arrive once NATS answers."""
    spool = Spool(tmp_path / "spool", max_bytes=10 << 20)
    spool.open()
    nc = await connect(own_nats)
    recorder = CallRecorder(spool, linger=0.01, max_calls=10, ack_timeout=3.0, retries=0)
    await recorder.start(nc)
    publish = nc.publish
    lost = asyncio.Event()

    async def swallowed(*_a: Any, **_k: Any) -> None:  # the message never reaches NATS: no ack
        lost.set()

    nc.publish = swallowed
    try:
        recorder.record(rec(0))
        await asyncio.wait_for(lost.wait(), 10)
        await record_slowly(recorder, range(1, 26))
        await wait_for(lambda: recorder.spooled == 20)  # two full batches, while the first waits
        assert recorder.published == 0 and len(recorder._pending) == 5
        nc.publish = publish
        await wait_for(lambda: recorder.published == 26, timeout=20)
        calls = await stream_calls(own_nats)
        assert sorted(c["request_bytes"] for c in calls) == list(range(26))
    finally:
        nc.publish = publish
        await recorder.stop()
        spool.close()
        await nc.close()


# -- a real gateway process: SIGTERM with events in flight ------------------------------------------------
MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream"}


async def call_echo(client: Any, url: str, i: int) -> None:
    r = await client.post(url, headers=MODERN, json={
        "jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": f"call {i}"}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["content"][0]["text"] == f"call {i}"


async def test_sigterm_of_a_gateway_loses_no_event(own_nats, tmp_path):
    """The gateway as a process (python -m wemcp.gateway.main): calls served while NATS is away, then
    SIGTERM — the events gathered and in flight go to the spool; NATS back, a new gateway process on
    the same spool replays them; calls with NATS up and an immediate SIGTERM are drained to NATS.
    Every call's event is in the stream exactly once."""
    redis = EmbeddedRedis(tmp_path / "redis", persistent=False)  # the gateway needs no database
    redis.start()
    port = free_port()
    env = {**os.environ, "NATS_URL": own_nats.url, "REDIS_URL": redis.url,
           "DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused",
           "WEMCP_GATEWAY_PORT": str(port), "WEMCP_GATEWAY_HOST": "127.0.0.1", "WEMCP_EGRESS_ALLOW": "127.0.0.1",
           "WEMCP_GATEWAY_SPOOL_DIR": str(tmp_path / "spool"), "WEMCP_GATEWAY_QUOTA_ENABLED": "false",
           "WEMCP_GATEWAY_MCP_ALLOW_ANONYMOUS": "true", "WEMCP_GATEWAY_CALL_EVENT_ACK_TIMEOUT_SECONDS": "0.5",
           "LOG_FORMAT": "json"}
    url = f"http://127.0.0.1:{port}/mcp/echo"

    async def start_gateway() -> ServiceProcess:
        gw = ServiceProcess("gateway", port, tmp_path / "gateway.log", env)
        gw.start()
        await wait_for(gw.alive)
        return gw

    async def served(client: Any) -> bool:
        try:
            await call_echo(client, url, -1)
        except (AssertionError, httpx.HTTPError, KeyError):
            return False
        return True

    async def sigterm(gw: ServiceProcess) -> None:
        gw.signal(signal.SIGTERM)
        await wait_for(lambda: not gw.alive(), timeout=30)
        assert gw.proc is not None and gw.proc.returncode == 0, gw.log_tail()

    async with serve_upstream("both") as upstream:
        await publish_route(own_nats.url, "echo", upstream)
        gw = await start_gateway()
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await wait_for(lambda: served(client), timeout=60, interval=0.2)
                for i in range(30):
                    await call_echo(client, url, i)
                own_nats.stop()
                for i in range(30, 60):  # served while NATS is away
                    await call_echo(client, url, i)
                await sigterm(gw)  # events of 30..59 (and perhaps some before) are gathered or in flight
                assert list((tmp_path / "spool").glob("*.seg")), "nothing was spooled"
                own_nats.start()
                gw = await start_gateway()  # replays the spool
                await wait_for(lambda: served(client), timeout=60, interval=0.2)
                for i in range(60, 90):
                    await call_echo(client, url, i)
                await sigterm(gw)  # NATS up: drained to NATS before the process ends
        finally:
            gw.stop()
            redis.stop()
    calls = [c for c in await stream_calls(own_nats) if c["tool"] == "echo" and c["status"] == "ok"]
    assert len(calls) == len({c["event_id"] for c in calls})  # no doubles
    assert len(calls) == 90 + 2  # every call, and the one successful probe of each start
    assert list((tmp_path / "spool").glob("*.seg")) == []
