"""Unit tests of the shared contracts: events, pagination, errors, redaction, routing."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from uuid import UUID

import httpx2 as httpx
import pytest
import structlog
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from wemcp.common.errors import Conflict, NotFound, TooManyRequests
from wemcp.common.events import ALL_EVENTS, STREAMS, ServerDisabled
from wemcp.common.events.doc import render
from wemcp.common.http import install_error_handlers
from wemcp.common.logging import REDACTED, configure_logging, redact_text, redact_value
from wemcp.common.pagination import Page, PageRequest

ROOT = Path(__file__).resolve().parents[3]


def test_every_event_lives_in_a_declared_stream_and_has_a_docstring():
    streams = {s.name: s for s in STREAMS}
    for subject, cls in ALL_EVENTS.items():
        assert cls.stream in streams, subject
        prefix = streams[cls.stream].subjects[0].removesuffix(">")
        assert subject.startswith(prefix), (subject, prefix)
        assert "Emitted by" in (cls.__doc__ or "") or "emitted by" in (cls.__doc__ or "").lower(), subject


def test_events_roundtrip_and_are_frozen():
    ev = ServerDisabled(server_id=UUID(int=1), slug="weather", reason="abuse")
    again = ServerDisabled.model_validate_json(ev.model_dump_json())
    assert again == ev and isinstance(again.event_id, UUID) and again.schema_version == 1
    with pytest.raises(ValidationError):
        ev.slug = "other"  # type: ignore[misc]


def test_events_ignore_unknown_fields_so_producers_can_add_fields_first():
    raw = ServerDisabled(server_id=UUID(int=1), slug="w").model_dump()
    raw["added_in_a_later_version"] = 42
    assert ServerDisabled.model_validate(raw).slug == "w"


def test_events_doc_is_current():
    assert (ROOT / "docs" / "events.md").read_text() == render(), \
        "docs/events.md is stale: run `python -m wemcp.common.events.doc > docs/events.md`"


def test_page_request_bounds_and_offset():
    req = PageRequest(page=3, page_size=25)
    assert (req.offset, req.limit) == (50, 25)
    for bad in ({"page": 0}, {"page_size": 0}, {"page_size": 101}, {"page": "x"}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            PageRequest(**bad)
    page = Page[int].of([1, 2], total=52, request=req)
    assert page.model_dump() == {"items": [1, 2], "total": 52, "page": 3, "page_size": 25}


class Body(BaseModel):
    name: str
    count: int


async def test_errors_render_as_problem_json():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound("no server named x")

    @app.get("/limited")
    async def limited() -> None:
        raise TooManyRequests("daily quota used", headers={"Retry-After": "60"}, extra={"limit": 1000})

    @app.post("/items")
    async def items(body: Body) -> dict:
        raise Conflict("exists")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://t") as c:
        r = await c.get("/missing")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert r.json() == {"type": "about:blank", "title": "Not Found", "status": 404,
                            "detail": "no server named x", "instance": "/missing"}
        r = await c.get("/limited")
        assert r.status_code == 429 and r.headers["retry-after"] == "60" and r.json()["limit"] == 1000
        r = await c.post("/items", json={"name": 3})
        assert r.status_code == 422
        fields = {e["field"] for e in r.json()["errors"]}
        assert fields == {"name", "count"}
        r = await c.post("/items", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
        r = await c.get("/boom")
        assert r.status_code == 500 and "secret internals" not in r.text
        r = await c.get("/nope")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("value, leaked", [
    ("Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJzdWIiOiJ4In0"),
    ("https://gw/mcp/x?key=wmk_abcdefghijklmnop&x=1", "abcdefghijklmnop"),
    ("postgresql://user:hunter2@db:5432/wemcp", "hunter2"),
    ("token wmk_0123456789abcdef used", "0123456789abcdef"),
])
def test_redaction_of_secret_looking_values(value, leaked):
    assert leaked not in redact_value(value)


@pytest.mark.parametrize("value, leaked", [
    ("calling with sk-proj-0123456789abcdefghijkl now", "0123456789abcdefghijkl"),
    ("OPENAI_API_KEY=not-shaped-like-a-key ready", "not-shaped-like-a-key"),
    ('{"access_token": "opaque-token-value"}', "opaque-token-value"),
    ("gh token ghp_0123456789abcdefghijABCDEFGHIJ", "0123456789abcdefghij"),
    ("aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("the input was my-own-value-42, twice: my-own-value-42", "my-own-value-42"),
])
def test_redaction_of_free_text(value, leaked):
    """A process's output (a hosted server's stderr shown to its owner): given values and anything
    key-shaped go, the rest stays readable."""
    out = redact_text(value, ["my-own-value-42", "abc"])
    assert leaked not in out and REDACTED in out
    assert redact_text("listening on port 3000, NODE_ENV=production; auth ok") == \
        "listening on port 3000, NODE_ENV=production; auth ok"


def test_redaction_of_secret_keys_in_nested_structures():
    out = redact_value({"headers": {"Authorization": "x", "X-WeMcp-Env-BAIDU_MAP_API_KEY": "k", "accept": "a"},
                        "items": [{"client_secret": "s", "name": "n"}]})
    assert out["headers"]["Authorization"] == REDACTED
    assert out["headers"]["X-WeMcp-Env-BAIDU_MAP_API_KEY"] == REDACTED
    assert out["headers"]["accept"] == "a"
    assert out["items"][0] == {"client_secret": REDACTED, "name": "n"}


def test_log_lines_are_json_with_service_and_no_secrets():
    configure_logging("unit", "info", "json")
    stream = io.StringIO()
    logging.getLogger().handlers[0].stream = stream  # type: ignore[attr-defined]
    structlog.get_logger("t").info("called_upstream", api_key="sk-live-123", url="https://x/?token=abc123",
                                   slug="weather")
    logging.getLogger("uvicorn.error").warning("Authorization: Bearer abc.def.ghi")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "called_upstream" and lines[0]["service"] == "unit"
    assert lines[0]["api_key"] == REDACTED and "abc123" not in lines[0]["url"]
    assert "abc.def.ghi" not in lines[1]["event"]


def test_gateway_routes_by_longest_prefix():
    from wemcp.gateway.routing import owner_of

    assert owner_of("servers/search") == "catalog"
    assert owner_of("me") == "auth"
    assert owner_of("me/usage") == "ratelimit"
    assert owner_of("services/deployer") == "deployer"
    assert owner_of("services/unknown") is None
    assert owner_of("nothing/here") is None
