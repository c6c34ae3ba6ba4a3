"""The call events' JSON (written without the pydantic model, for speed) is a valid McpCallCompleted."""

from __future__ import annotations

import uuid

import orjson

from wemcp.common.events.calls import McpCallCompleted
from wemcp.gateway.calls import CallRecord, event_json


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
