"""The call events' JSON (written without the pydantic models, for speed) is a valid McpCallsCompleted;
the recorder publishes batches and acknowledges them."""

from __future__ import annotations

import uuid

import nats
import orjson

import wemcp.gateway.calls as calls
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.devstack.testing import wait_for
from wemcp.gateway.calls import CallRecord, CallRecorder, batch_json, call_json


def rec(i: int = 0, slug: str = "echo") -> CallRecord:
    return CallRecord(None, slug, "tools/call", "echo", "none", True, False, "ok", None, 1.0, i, 0)


def test_batch_json_is_the_contract():
    user = uuid.uuid4()
    recs = [CallRecord(user, "weather", "tools/call", "forecast", "vault", False, True, "error", -32602,
                       12.34567, 120, 3456, uuid.uuid4(), at=1_700_000_000.25),
            CallRecord(None, "echo", "tools/call", None, "none", True, False, "ok", None, 0.5, 0, 0)]
    event_id, body = batch_json([call_json(r) for r in recs], "gw-1")
    batch = McpCallsCompleted.model_validate_json(body)
    assert str(batch.event_id) == event_id and batch.gateway == "gw-1" and batch.occurred_at.tzinfo is not None
    assert batch.schema_version == McpCallsCompleted.model_fields["schema_version"].default
    assert len({c.event_id for c in batch.calls}) == 2
    assert batch.calls[0].occurred_at.timestamp() == 1_700_000_000.25
    for r, ev in zip(recs, batch.calls, strict=True):
        assert ev.schema_version == McpCallCompleted.model_fields["schema_version"].default
        assert (ev.user_id, ev.server_slug, ev.agent_id, ev.method, ev.tool, ev.key_source, ev.metered,
                ev.in_agent_run, ev.status, ev.error_code, ev.request_bytes, ev.response_bytes) == (
            r.user_id, r.server_slug, r.agent_id, r.method, r.tool, r.key_source, r.metered,
            r.in_agent_run, r.status, r.error_code, r.request_bytes, r.response_bytes)
        assert ev.latency_ms == round(r.latency_ms, 3)
    # nothing the models do not know (consumers ignore extras, but the events carry none)
    raw = orjson.loads(body)
    assert set(raw) == set(batch.model_dump())
    assert all(set(c) == set(McpCallCompleted.model_fields) for c in raw["calls"])


async def test_recorder_publishes_batches_capped_by_count_and_bytes(infra, clean_bus):
    """Calls gathered together leave as few messages; no batch passes the caps; every call arrives
    once; without a spool a refused batch is counted as dropped."""
    nc = await nats.connect(infra.nats_url)
    seen: list[bytes] = []

    async def on_batch(m: object) -> None:
        seen.append(m.data)  # type: ignore[attr-defined]

    sub = await nc.subscribe(McpCallsCompleted.subject, cb=on_batch)
    recorder = CallRecorder(max_calls=40, max_bytes=8192, linger=0.05, retries=0)
    await recorder.start(nc)
    try:
        for i in range(100):
            recorder.record(rec(i))
        await wait_for(lambda: recorder.published == 100)
        assert recorder.dropped == 0 and recorder.batches == len(seen)
        got = [orjson.loads(d) for d in seen]
        assert sorted(c["request_bytes"] for b in got for c in b["calls"]) == list(range(100))
        assert all(len(b["calls"]) <= 40 for b in got) and all(len(d) <= 8192 for d in seen)
        assert len(seen) <= 20  # 100 calls, each batch up to ~25 of these (bytes) or 40 (count)
        # the stream refuses (another stream expected): tried, then counted as lost (no spool here)
        old = calls.STREAM
        calls.STREAM = "NO_SUCH_STREAM"
        try:
            recorder.record(rec(0))
            await wait_for(lambda: recorder.dropped == 1)
        finally:
            calls.STREAM = old
        assert recorder.published == 100
    finally:
        await recorder.stop()
        await sub.unsubscribe()
        await nc.close()
