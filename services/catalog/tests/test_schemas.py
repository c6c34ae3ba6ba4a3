"""The response models answer what the routes answered before they declared them: a dict run through
FastAPI's encoder (times as ``isoformat()``, ``+00:00``; free-form JSON as it was), key for key, and a
key the model does not list is refused rather than dropped."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ValidationError

from wemcp.catalog.schemas import CategoryList, RegistryList, ServerDetail

AT = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC)


def _detail() -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "slug": "weather", "name": "io.wemcp.acme/weather", "version": "1.0.0",
        "title": "Weather", "description": "d", "readme": "", "icon": "https://x/i.svg", "owner_id": uuid.uuid4(),
        "status": "published", "status_detail": None, "withdrawn": False, "review_reason": None,
        "source_kind": "mcpServers", "category": None, "tags": ["weather"], "featured": False,
        "tools": [{"name": "forecast", "inputSchema": {"type": "object"}}], "prompts": [], "resources": [],
        "calls": 3, "stars": 0,
        "name_verification": {"verified": False, "method": "platform", "namespace": "io.wemcp.acme",
                              "namespace_kind": "platform", "verified_at": AT.isoformat()},
        "created_at": AT, "updated_at": AT, "published_at": AT, "deployed_at": None, "searchable": True,
        "inputs": [{"name": "KEY", "isSecret": True, "location": "env"}], "spec": {"packages": []},
        "connect": {"runs": "hosted", "url": "https://gw/mcp/weather"}, "hosting": "hosted",
        "health": {"status": "up", "checked_at": AT, "latency_ms": 12.5, "error": None},
    }


def _as_json(model: type[BaseModel], body: dict[str, Any], **dump: Any) -> Any:
    return json.loads(model.model_validate(body).model_dump_json(by_alias=True, **dump))


def test_detail_answers_what_the_encoder_wrote() -> None:
    body = _detail()
    got = _as_json(ServerDetail, body)
    assert got == jsonable_encoder(body)
    assert got["created_at"] == "2026-12-02T10:00:00.123456+00:00"
    assert got["health"]["checked_at"] == "2026-12-02T10:00:00.123456+00:00"


def test_registry_feed_keeps_its_keys_and_leaves_out_the_cursor_on_the_last_page() -> None:
    entry = {"server": {"name": "io.wemcp.acme/weather", "version": "1.0.0", "icons": [{"src": "x"}]},
             "_meta": {"io.modelcontextprotocol.registry/official": {"status": "active", "publishedAt": AT,
                                                                      "updatedAt": AT, "isLatest": True},
                       "com.wemcp/catalog": {"slug": "weather", "status": "published", "tools": 1,
                                             "nameVerified": False}}}
    for metadata in ({"count": 1}, {"count": 1, "nextCursor": "abc"}):
        body = {"servers": [entry], "metadata": metadata}
        assert _as_json(RegistryList, body, exclude_unset=True) == jsonable_encoder(body)


def test_a_key_the_model_does_not_list_is_refused() -> None:
    tree = {"items": [{"slug": "a", "name": "A", "parent": None, "position": 0, "count": 1, "own_count": 1,
                       "children": []}]}
    assert _as_json(CategoryList, tree) == tree
    tree["items"][0]["extra"] = 1
    with pytest.raises(ValidationError):
        CategoryList.model_validate(tree)
    with pytest.raises(ValidationError):
        ServerDetail.model_validate(_detail() | {"surprise": True})
