"""The call events' JSON (written without the pydantic model, for speed) is a valid McpCallCompleted."""

from __future__ import annotations

import asyncio
import uuid

import nats
import orjson

import wemcp.gateway.calls as calls
from wemcp.common.events.calls import McpCallCompleted
from wemcp.gateway.calls import CallRecord, CallRecorder, event_json


def test_event_json_is_the_contract():
    user = uuid.uuid4()
    for rec in (CallRecord(user, "weather", "tools/call", "forecast", "vault", False, True, "error", -32602,
                           12.34567, 120, 3456, uuid.uuid4()),
                CallRecord(None, "echo", "tools/call", None, "none", True, False, "ok", None, 0.5, 0, 0)):
        event_id, body = event_json(rec)
        ev = McpCallCompleted.model_validate_json(body)
        assert str(ev.event_id) == event_id and ev.occurred_at.tzinfo is not None
        assert ev.schema_version == McpCallCompleted.model_fields["schema_version"].default
        assert (ev.user_id, ev.server_slug, ev.agent_id, ev.method, ev.tool, ev.key_source, ev.metered,
                ev.in_agent_run, ev.status, ev.error_code, ev.request_bytes, ev.response_bytes) == (
            rec.user_id, rec.server_slug, rec.agent_id, rec.method, rec.tool, rec.key_source, rec.metered,
            rec.in_agent_run, rec.status, rec.error_code, rec.request_bytes, rec.response_bytes)
        assert ev.latency_ms == round(rec.latency_ms, 3)
        # nothing the model does not know (consumers ignore extras, but the event carries none)
        assert set(McpCallCompleted.model_validate_json(body).model_dump()) == set(orjson.loads(body))


async def test_recorder_publishes_one_message_per_event_and_counts_refusals(infra, clean_bus):
    """Acknowledgements are matched without waiting per event: every event lands once on the stream
    (dedup by event id), ``published`` counts the acks; a refusal is retried, then counted as lost."""
    nc = await nats.connect(infra.nats_url)
    seen: list[bytes] = []

    async def on_event(m: object) -> None:
        seen.append(m.data)  # type: ignore[attr-defined]

    sub = await nc.subscribe(McpCallCompleted.subject, cb=on_event)
    rec = CallRecorder(retries=1, max_unacked=8)
    rec.start(nc.jetstream())
    try:
        for i in range(50):
            rec.record(CallRecord(None, "echo", "tools/call", "echo", "none", True, False, "ok", None, 1.0, i, 0))
        for _ in range(200):
            if rec.published == 50:
                break
            await asyncio.sleep(0.02)
        assert rec.published == 50 and rec.failed == 0 and not rec._unacked
        assert sorted(orjson.loads(d)["request_bytes"] for d in seen) == list(range(50))
        # the stream refuses (another stream expected): retried once after backoff, then counted
        old = calls.STREAM
        calls.STREAM = "NO_SUCH_STREAM"
        try:
            rec.record(CallRecord(None, "echo", "tools/call", "echo", "none", True, False, "ok", None, 1.0, 0, 0))
            for _ in range(200):
                if rec.failed:
                    break
                await asyncio.sleep(0.02)
        finally:
            calls.STREAM = old
        assert rec.failed == 1 and rec.published == 50
    finally:
        await rec.stop()
        await sub.unsubscribe()
        await nc.close()
