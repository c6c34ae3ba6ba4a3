"""OpenAPI → MCP: a server submitted as an OpenAPI document (normalised by the catalog's own code, as a
submission would be) is served by the gateway as MCP tools that call a real HTTP API on loopback; the
API records what it really received."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from services.gateway.tests.gateway_testkit import USERS, bearer, mcp_client, serve_app, text_of
from wemcp.catalog.normalize import normalize
from wemcp.catalog.schemas import ServerSubmit
from wemcp.common.events.servers import ServerSubmitted
from wemcp.devstack.infra import free_port

pytestmark = pytest.mark.asyncio


def document(base: str) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Pet Store", "version": "1.2.0"},
        "servers": [{"url": base}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}},
            "schemas": {"NewPet": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}}},
            "parameters": {"Trace": {"name": "X-Trace", "in": "header", "schema": {"type": "string"}}},
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/pets/{pet_id}": {
                "parameters": [{"name": "pet_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"operationId": "getPet", "summary": "One pet",
                        "parameters": [{"name": "verbose", "in": "query", "schema": {"type": "boolean"},
                                        "description": "more detail"},
                                       {"$ref": "#/components/parameters/Trace"}]},
                "delete": {"operationId": "deletePet"},
            },
            "/pets": {"post": {"operationId": "createPet", "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}}}}}},
            "/moved": {"get": {"operationId": "moved"}},
        },
    }


class PetApi:
    """A small HTTP API that records every request it receives."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def any_path(request: Request) -> Response:
            body = await request.body()
            self.seen.append({"method": request.method, "raw_path": request.scope["raw_path"].decode(),
                              "query": dict(request.query_params), "headers": dict(request.headers),
                              "body": body})
            path = request.url.path
            if path.endswith("/moved"):
                return RedirectResponse("/elsewhere", status_code=302)
            if path.endswith("/pets/missing"):
                return JSONResponse({"detail": "no such pet"}, status_code=404)
            if request.method == "POST":
                return JSONResponse({"created": json.loads(body)}, status_code=201)
            if request.method == "DELETE":
                return Response(status_code=204)
            return JSONResponse({"pet": path.rsplit("/", 1)[-1], "verbose": request.query_params.get("verbose")})

        return Starlette(routes=[Route("/{rest:path}", any_path, methods=["GET", "POST", "DELETE"])])


@contextlib.asynccontextmanager
async def pet_api() -> AsyncIterator[tuple[PetApi, int]]:
    api = PetApi()
    port = free_port()
    async with serve_app(api.app(), port):
        yield api, port


async def submit(stack, slug: str, base: str) -> tuple[str, dict[str, Any]]:
    """Publish ``server.submitted`` with the spec the catalog makes of this document; returns the
    declared key input's name and the spec."""
    n = normalize(ServerSubmit(openapi=document(base), name="io.test/petstore"))
    await stack.publish(ServerSubmitted(server_id=uuid.uuid4(), slug=slug, name=n.name, spec=n.spec))
    await stack.wait_route(slug, lambda r: r.routable and r.kind == "openapi")
    (key_input,) = n.spec["openapi"]["inputs"]
    return key_input["name"], n.spec


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_operations_are_tools_that_reach_the_api(stack, mode):
    async with pet_api() as (api, port):
        stack.mcp.openapi.egress.add("127.0.0.1")  # a loopback API, allowed on purpose (WEMCP_EGRESS_ALLOW)
        key_name, _ = await submit(stack, "pets", f"http://127.0.0.1:{port}/v1")
        assert key_name == "PET_STORE_APIKEY"
        stack.auth.vault[(str(USERS["bob"]), "pets")] = {key_name: "bob-vault-key"}

        async with mcp_client(stack.url + "/mcp/pets", {**bearer("alice"), f"X-WeMcp-Env-{key_name}": "alice-key"},
                              mode=mode) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) == {"getPet", "deletePet", "createPet", "moved"}
            get = tools["getPet"].input_schema
            assert set(get["properties"]) == {"pet_id", "verbose", "X-Trace"}
            assert get["required"] == ["pet_id"]
            assert get["properties"]["verbose"] == {"type": "boolean", "description": "more detail"}
            create = tools["createPet"].input_schema
            assert create["required"] == ["body"]
            assert create["properties"]["body"]["required"] == ["name"]  # the $ref, resolved
            assert tools["getPet"].description == "One pet"

            # path (encoded), query and header parameters; the key from X-WeMcp-Env-<NAME>
            r = await c.call_tool("getPet", {"pet_id": "a b/c", "verbose": True, "X-Trace": "trace-1"})
            assert not r.is_error, text_of(r)
            assert json.loads(text_of(r)) == {"pet": "c", "verbose": "true"}
            got = api.seen[-1]
            assert (got["method"], got["raw_path"], got["query"]) == ("GET", "/v1/pets/a%20b%2Fc", {"verbose": "true"})
            assert got["headers"]["x-trace"] == "trace-1" and got["headers"]["x-api-key"] == "alice-key"
            assert got["body"] == b""

            # a JSON body
            pet = {"name": "Rex", "tags": ["good", "dog"]}
            r = await c.call_tool("createPet", {"body": pet})
            assert not r.is_error and json.loads(text_of(r)) == {"created": pet}
            got = api.seen[-1]
            assert (got["method"], got["raw_path"], got["query"]) == ("POST", "/v1/pets", {})
            assert got["headers"]["content-type"] == "application/json" and json.loads(got["body"]) == pet
            assert got["headers"]["x-api-key"] == "alice-key"

            r = await c.call_tool("deletePet", {"pet_id": "7"})
            assert not r.is_error and (api.seen[-1]["method"], api.seen[-1]["raw_path"]) == ("DELETE", "/v1/pets/7")

            # the API's error status is a tool error; a redirect is not followed
            r = await c.call_tool("getPet", {"pet_id": "missing"})
            assert r.is_error and "HTTP 404" in text_of(r) and "no such pet" in text_of(r)
            n = len(api.seen)
            r = await c.call_tool("moved", {})
            assert r.is_error and "redirect" in text_of(r)
            assert len(api.seen) == n + 1 and api.seen[-1]["raw_path"] == "/v1/moved"  # /elsewhere never asked
            with pytest.raises(MCPError) as e:
                await c.call_tool("nope", {})
            assert e.value.code == -32602

        # bob's key comes from his vault; with no key at all the declared input is named
        async with mcp_client(stack.url + "/mcp/pets", bearer("bob"), mode=mode) as c:
            r = await c.call_tool("getPet", {"pet_id": "1"})
            assert not r.is_error and api.seen[-1]["headers"]["x-api-key"] == "bob-vault-key"
        n = len(api.seen)
        async with mcp_client(stack.url + "/mcp/pets", bearer("alice"), mode=mode) as c:
            with pytest.raises(MCPError) as e:
                await c.call_tool("getPet", {"pet_id": "1"})
            assert e.value.code == -32602 and key_name in e.value.message
        assert len(api.seen) == n


async def test_private_base_urls_are_refused(stack):
    """SSRF: loopback, private and link-local base URLs are refused unless the address is allowed —
    whether given as an IP literal or as a name that resolves to one (the egress policy; its own
    tests are in libs/common/tests/test_netpolicy.py and tests/security/test_egress.py)."""
    async with pet_api() as (api, port):
        bases = {"literal": f"http://127.0.0.1:{port}", "name": f"http://localhost:{port}",
                 "metadata": "http://169.254.169.254", "private": "http://10.1.2.3:8080",
                 "mapped": f"http://[::ffff:127.0.0.1]:{port}"}
        for slug, base in bases.items():
            key_name, _ = await submit(stack, slug, base)
            async with mcp_client(stack.url + f"/mcp/{slug}", {**bearer("alice"), f"X-WeMcp-Env-{key_name}": "k"}) as c:
                r = await c.call_tool("getPet", {"pet_id": "1"})
                assert r.is_error and "not a public address" in text_of(r), (slug, text_of(r))
        assert api.seen == []  # nothing reached the API

        # the setting lets a named address through (and only that one)
        stack.mcp.openapi.egress.add("127.0.0.1")
        async with httpx.AsyncClient() as h:
            r = await h.post(stack.url + "/api/v1/servers/literal/tools/getPet/call",
                             headers={**bearer("alice"), f"X-WeMcp-Env-{key_name}": "k"},
                             json={"arguments": {"pet_id": "1"}})
            assert r.status_code == 200, r.text
            assert r.json()["result"]["isError"] is False and api.seen[-1]["raw_path"] == "/pets/1"
            r = await h.post(stack.url + "/api/v1/servers/private/tools/getPet/call",
                             headers={**bearer("alice"), f"X-WeMcp-Env-{key_name}": "k"},
                             json={"arguments": {"pet_id": "1"}})
            assert r.json()["result"]["isError"] is True
            assert "not a public address" in r.json()["result"]["content"][0]["text"]
        assert len(api.seen) == 1
