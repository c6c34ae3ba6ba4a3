"""Calls end to end, every service a real process: two servers hosted by the real deployer —
`mcp-server-time` from PyPI (a server.json) and a source archive that reports the upstream key it was
started with (a declared secret input) — called through the gateway's MCP router by the official
`mcp` client (both protocol eras) and the MCP Inspector CLI (npm, both eras, Streamable HTTP and
legacy SSE); the system key an admin set, the 1000 free calls a day and the 1001st refused, own keys
unmetered and never crossing between users; agents answering through two tool rounds with the real
`openai` client and the Node SDK against a scripted model on loopback, an agent served as an MCP
server, its internal MCP calls uncounted and its 101st call of the day refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio

from tests.e2e.e2e_kit import node_tool, published, submit_archive, superadmin_key, user_key
from wemcp.devstack.sources import PING, stdio_server
from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import npm_install, serve_app, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TIME_VERSION = "2026.10.19"
TIME_JSON = {
    "name": "io.github.e2e-calls/clock",
    "title": "Clock",
    "description": "Current time in any IANA time zone, and conversions between zones.",
    "version": TIME_VERSION,
    "packages": [{"registryType": "pypi", "identifier": "mcp-server-time", "version": TIME_VERSION,
                  "transport": {"type": "stdio"},
                  "packageArguments": [{"type": "named", "name": "--local-timezone", "value": "UTC"}]}],
}
KEY_ECHO = textwrap.dedent('''
    import os
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("key-echo")

    @app.tool()
    def whoami() -> str:
        """The upstream key this server was started with."""
        return os.environ.get("ECHO_API_KEY", "-")

    if __name__ == "__main__":
        app.run()
''')
ECHO_MANIFEST = {"name": "io.github.e2e-calls/key-echo", "version": "1.0.0", "runtime": "python",
                 "entrypoint": "server.py", "description": "Reports the upstream key it received.",
                 "environmentVariables": [{"name": "ECHO_API_KEY", "isSecret": True, "isRequired": True,
                                           "description": "the upstream API key"}]}
PING_SERVER = stdio_server("ping", PING)
SYSTEM_KEY = "sk-platform-system-key-0001"
MODERN = "2026-07-28"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Hosted:
    url: str
    admin: dict[str, str]
    users: dict[str, tuple[str, str]]  # name -> (user id, platform API key)
    time_slug: str
    echo_slug: str

    def auth(self, user: str) -> dict[str, str]:
        return bearer(self.users[user][1])


@pytest_asyncio.fixture(scope="module")
async def hosted(stack: Stack, gateway_url: str) -> AsyncIterator[Hosted]:
    admin = bearer(superadmin_key(stack, "e2e-calls-admin"))
    users = {name: await user_key(stack, f"e2e-{name}") for name in ("alice", "bob", "agent-user")}
    owner = bearer(users["alice"][1])
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        # names under the owner's own namespace (io.github.e2e-calls would need that GitHub account)
        own = (await c.get("/api/v1/names/mine", headers=owner)).json()["platform_namespace"]
        r = await c.post("/api/v1/servers", json={"server_json": {**TIME_JSON, "name": f"{own}/clock"}}, headers=owner)
        # a package is listed once: when test_catalog_deployed (same session) listed it already, use that
        assert r.status_code == 202 or (r.status_code == 409 and "already listed" in r.json()["detail"]), r.text
        time_slug = r.json()["slug"]
        echo = await submit_archive(c, owner, {**ECHO_MANIFEST, "name": f"{own}/key-echo"},
                                    {"server.py": KEY_ECHO, "requirements.txt": "mcp==2.3.0\n"})
        t0 = time.monotonic()
        clock, keyed = await asyncio.gather(published(c, time_slug, owner), published(c, echo["slug"], owner))
        print(f"\nboth hosted and published in {time.monotonic() - t0:.1f} s")
        assert {t["name"] for t in clock["tools"]} == {"get_current_time", "convert_time"}
        assert [t["name"] for t in keyed["tools"]] == ["whoami"]
        assert keyed["source_kind"] == "archive"
    yield Hosted(gateway_url, admin, users, time_slug, echo["slug"])


def mcp_client(url: str, headers: dict[str, str], mode: str = "auto") -> Any:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30.0, read=60.0))
    return Client(streamable_http_client(url, http_client=http), mode=mode)


async def modern_call(h: httpx.AsyncClient, url: str, headers: dict[str, str], tool: str,
                      arguments: dict[str, Any] | None = None, rid: int = 1) -> httpx.Response:
    """One stateless 2026-07-28 tools/call: a single POST, no session."""
    return await h.post(url, headers={**headers, "mcp-protocol-version": MODERN, "mcp-method": "tools/call",
                                      "mcp-name": tool, "accept": "application/json, text/event-stream"},
                        json={"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {
                            "name": tool, "arguments": arguments or {},
                            "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                      "io.modelcontextprotocol/clientCapabilities": {}}}})


def text_result(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    body = r.json()
    assert "result" in body, body
    return body["result"]["content"][0]["text"]


# -- the MCP Inspector CLI (npm) ----------------------------------------------------------------------


async def inspector(url: str, key: str, *args: str, transport: str = "http", era: str = "legacy") -> dict[str, Any]:
    exe = await asyncio.to_thread(node_tool, "mcp-inspector")
    out = await asyncio.to_thread(
        subprocess.run,[str(exe), "--cli", url, "--transport", transport, "--protocol-era", era,
                          "--header", f"Authorization: Bearer {key}", "--format", "json", "--quiet", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return json.loads(out.stdout)["result"]


@pytest.mark.parametrize(("transport", "era"), [("http", "legacy"), ("http", "modern"), ("sse", "legacy")])
async def test_inspector_cli_lists_and_calls_a_hosted_server(hosted: Hosted, transport: str, era: str):
    url = f"{hosted.url}/mcp/{hosted.time_slug}" + ("/sse" if transport == "sse" else "")
    key = hosted.users["bob"][1]
    listed = await inspector(url, key, "--method", "tools/list", transport=transport, era=era)
    assert {t["name"] for t in listed["tools"]} == {"get_current_time", "convert_time"}, listed
    called = await inspector(url, key, "--method", "tools/call", "--tool-name", "get_current_time",
                       "--tool-arg", "timezone=Asia/Shanghai", transport=transport, era=era)
    assert not called.get("isError"), called
    assert json.loads(called["content"][0]["text"])["timezone"] == "Asia/Shanghai", called


# -- keys and the daily quota ---------------------------------------------------------------------------


async def test_system_key_then_1001st_refused_own_keys_unmetered_and_never_crossed(hosted: Hosted):
    from mcp.shared.exceptions import MCPError

    url = f"{hosted.url}/mcp/{hosted.echo_slug}"
    alice, bob = hosted.auth("alice"), hosted.auth("bob")
    async with httpx.AsyncClient(base_url=hosted.url, timeout=30,
                                 limits=httpx.Limits(max_connections=16, max_keepalive_connections=16)) as c:
        # no system key yet and no own key: a clear error naming the input, and nothing counted
        r = await modern_call(c, url, alice, "whoami")
        assert r.json()["error"]["data"]["missing"] == ["ECHO_API_KEY"], r.text
        # an admin sets the server's system key (write-only, masked); a user cannot
        body = {"server": hosted.echo_slug, "name": "ECHO_API_KEY", "value": SYSTEM_KEY}
        assert (await c.put("/api/v1/vault/system", json=body, headers=alice)).status_code == 403
        r = await c.put("/api/v1/vault/system", json=body, headers=hosted.admin)
        assert r.status_code == 200 and SYSTEM_KEY not in r.text, r.text

        async def system_key_used() -> bool:  # until user.secret_changed reached the gateway
            body = (await modern_call(c, url, alice, "whoami")).json()
            return "result" in body and body["result"]["content"][0]["text"] == SYSTEM_KEY

        await wait_for(system_key_used, timeout=2)
        used = 1
        # the official client, both eras: the system key, metered
        for mode in ("legacy", "auto"):
            async with mcp_client(url, alice, mode) as m:
                assert (await m.call_tool("whoami", {})).content[0].text == SYSTEM_KEY
                used += 1
        # the rest of the day's 1000, 8 at a time; every reply carries the falling remainder
        remaining: list[int] = []

        async def one(i: int) -> None:
            r = await modern_call(c, url, alice, "whoami", rid=i)
            assert text_result(r) == SYSTEM_KEY
            assert r.headers["x-ratelimit-limit"] == "1000"
            remaining.append(int(r.headers["x-ratelimit-remaining"]))

        t0 = time.perf_counter()
        todo = list(range(1000 - used))
        for i in range(0, len(todo), 8):
            await asyncio.gather(*(one(n) for n in todo[i:i + 8]))
        took = time.perf_counter() - t0
        print(f"\n{len(todo)} system-key calls through gateway → bridge → sandboxed server: {took:.1f} s "
              f"({len(todo) / took:.0f} calls/s at concurrency 8)")
        assert min(remaining) == 0 and len(set(remaining)) == len(remaining)  # exact: each count once
        # the 1001st: HTTP 429 with Retry-After, the JSON-RPC error inside
        r = await modern_call(c, url, alice, "whoami")
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == -32029 and int(r.headers["retry-after"]) > 0
        assert r.headers["x-ratelimit-remaining"] == "0"
        async with mcp_client(url, alice, "legacy") as m:
            with pytest.raises(MCPError) as refused:
                await m.call_tool("whoami", {})
            assert refused.value.code == -32029
        # REST try-it-out: 429 problem+json
        r = await c.post(f"/api/v1/servers/{hosted.echo_slug}/tools/whoami/call", json={"arguments": {}},
                         headers=alice)
        assert r.status_code == 429 and r.headers["content-type"].startswith("application/problem+json")
        # her own key sent with the request: works, unmetered
        r = await modern_call(c, url, {**alice, "X-WeMcp-Env-ECHO_API_KEY": "alice-per-request"}, "whoami")
        assert text_result(r) == "alice-per-request" and "x-ratelimit-remaining" not in r.headers
        # her own key saved in the vault: used by the next calls, unmetered, although her quota is gone
        r = await c.put("/api/v1/vault", json={"server": hosted.echo_slug, "name": "ECHO_API_KEY",
                                               "value": "alice-vault-key"}, headers=alice)
        assert r.status_code == 200 and "alice-vault-key" not in r.text, r.text
        r = await c.put("/api/v1/vault", json={"server": hosted.echo_slug, "name": "ECHO_API_KEY",
                                               "value": "bob-vault-key"}, headers=bob)
        assert r.status_code == 200

        async def own_key_used() -> bool:
            return text_result(await modern_call(c, url, alice, "whoami")) == "alice-vault-key"

        await wait_for(own_key_used, timeout=2)

    # two users with their own keys, 4 official clients (both eras), 400 interleaved calls: the real
    # bridge runs one child per credential set, and nobody ever sees the other's key
    seen: dict[str, list[str]] = {"alice": [], "bob": []}

    async def user(name: str, mode: str) -> None:
        async with mcp_client(url, hosted.auth(name), mode) as m:
            for _ in range(10):
                results = await asyncio.gather(*(m.call_tool("whoami", {}) for _ in range(10)))
                seen[name].extend(x.content[0].text for x in results)

    async with asyncio.timeout(120):
        await asyncio.gather(user("alice", "legacy"), user("bob", "auto"), user("alice", "auto"),
                             user("bob", "legacy"))
    assert len(seen["alice"]) == len(seen["bob"]) == 200
    assert set(seen["alice"]) == {"alice-vault-key"} and set(seen["bob"]) == {"bob-vault-key"}

    # her usage today: 1000 of 1000 on the system key, own-key calls and refusals recorded beside
    async with httpx.AsyncClient(base_url=hosted.url, timeout=30) as c:
        async def usage() -> dict[str, Any] | None:
            r = await c.get("/api/v1/me/usage", params={"server": hosted.echo_slug}, headers=alice)
            assert r.status_code == 200, r.text
            row = next(s for s in r.json()["servers"] if s["id"] == hosted.echo_slug)
            return row if row["own_key"] >= 202 and row["refused"] >= 3 else None

        row = await wait_for(usage, timeout=20, interval=0.2)
        assert (row["used"], row["limit"], row["remaining"]) == (1000, 1000, 0), row


# -- agents -----------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def model(hosted: Hosted) -> AsyncIterator[Any]:
    """A scripted OpenAI-compatible model on loopback (the agents tests' own), registered by an admin."""
    from wemcp.testkit.model import ScriptedModel

    scripted = ScriptedModel()
    async with serve_app(scripted.app()) as url, httpx.AsyncClient(base_url=hosted.url, timeout=30) as c:
        r = await c.post("/api/v1/model-providers", headers=hosted.admin, json={
            "name": "loopback", "base_url": url + "/v1", "models": ["scripted-1"], "api_key": "sk-loopback-0001"})
        assert r.status_code == 201, r.text
        yield scripted


async def _usage(c: httpx.AsyncClient, headers: dict[str, str], kind: str, sid: str) -> dict[str, Any]:
    r = await c.get("/api/v1/me/usage", params={kind: sid}, headers=headers)
    assert r.status_code == 200, r.text
    return next(s for s in r.json()["servers" if kind == "server" else "agents"] if s["id"] == sid)


async def test_agents_through_the_real_router(hosted: Hosted, model: Any):
    import openai
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from services.agents.tests.test_api_chat_completions import TIME_Q, check_time_answer
    from wemcp.sdk import AsyncWeMcp, mcp, mcp_calls

    me = hosted.auth("agent-user")
    key = hosted.users["agent-user"][1]
    ref = hosted.time_slug
    oc = openai.AsyncOpenAI(base_url=hosted.url + "/v1", api_key=key, max_retries=0)
    async with httpx.AsyncClient(base_url=hosted.url, timeout=60) as c:
        # the plain openai client: two tool rounds against the hosted mcp-server-time
        done = await oc.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": TIME_Q}],
                                                tools=[{"type": "mcp", "ref": ref}])  # type: ignore[list-item]
        check_time_answer(done.choices[0].message.content)
        assert [(x.round, x.ref, x.tool, x.status) for x in mcp_calls(done)] == [
            (1, ref, "get_current_time", "ok"), (2, ref, "convert_time", "ok")]
        # streaming, through the SDK over the same client
        sdk = AsyncWeMcp(api_key=key, base_url=hosted.url, max_retries=0)
        stream = await sdk.chat.completions.create(model="scripted-1", stream=True, tools=[mcp(ref)],
                                                   messages=[{"role": "user", "content": TIME_Q}])
        text, pieces, last = "", 0, None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text, pieces = text + chunk.choices[0].delta.content, pieces + 1
            if chunk.choices and chunk.choices[0].finish_reason:
                last = chunk
        check_time_answer(text)
        assert pieces > 3 and len(mcp_calls(last)) == 2
        # plain completions' MCP calls are the user's own: counted against the server (2 per answer)

        async def counted() -> dict[str, Any] | None:
            row = await _usage(c, me, "server", ref)
            return row if row["used"] == 4 and row["calls"] == 4 else None

        await wait_for(counted, timeout=10, interval=0.1)

        # the Node SDK (openai npm package) against the same gateway
        node_dir = ROOT / "sdk" / "node"
        # the SDK keeps no lock file (a library's users resolve its range): npm install, once
        await asyncio.to_thread(npm_install, node_dir, node_dir / "node_modules" / "openai", ci=False)
        proc = await asyncio.create_subprocess_exec(
            "node", "--test", "test/", cwd=node_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "WEMCP_BASE_URL": hosted.url, "WEMCP_API_KEY": key, "WEMCP_MODEL": "scripted-1",
                 "WEMCP_TIME_REF": ref})
        out_b, _ = await asyncio.wait_for(proc.communicate(), 180)
        out = out_b.decode(errors="replace")
        assert proc.returncode == 0 and "# pass 5" in out and "# fail 0" in out, out[-3000:]

        # (the Node tests' agent made its 2 calls inside its run: recorded once their events land)
        async def node_settled() -> dict[str, Any] | None:
            row = await _usage(c, me, "server", ref)
            return row if row["in_agent_run"] >= 2 and row["calls"] >= row["used"] + row["in_agent_run"] else None

        before = await wait_for(node_settled, timeout=10, interval=0.1)
        # a saved agent, served as an MCP server, answers through the official client
        r = await c.post("/api/v1/agents", headers=me, json={
            "name": "Time helper", "description": "Answers time questions", "model": "scripted-1",
            "mcp_servers": [{"ref": ref}]})
        assert r.status_code == 201, r.text
        agent = r.json()
        http = httpx.AsyncClient(headers=me, timeout=httpx.Timeout(30.0, read=120.0))
        async with Client(streamable_http_client(f"{hosted.url}{agent['mcp_url']}", http_client=http)) as m:
            tools = (await m.list_tools()).tools
            assert [t.name for t in tools] == ["time_helper"]
            answer = await m.call_tool("time_helper", {"message": TIME_Q})
            assert not answer.is_error, answer
            check_time_answer(answer.content[0].text)
        await http.aclose()
        # and over the OpenAI-compatible agent endpoint
        reply = await oc.post(f"/agents/{agent['id']}/chat/completions", cast_to=openai.types.chat.ChatCompletion,
                              body={"messages": [{"role": "user", "content": TIME_Q}]})
        check_time_answer(reply.choices[0].message.content)

        # the agent's own MCP calls (2 runs x 2) ran inside its runs: recorded, not counted
        async def in_run_recorded() -> dict[str, Any] | None:
            row = await _usage(c, me, "server", ref)
            return row if row["in_agent_run"] >= before["in_agent_run"] + 4 else None

        after = await wait_for(in_run_recorded, timeout=10, interval=0.1)
        assert after["used"] == before["used"], (before, after)

        # the agent's 100 calls a day: spend what is left, then the 101st is refused
        async def agent_used() -> dict[str, Any] | None:
            row = await _usage(c, me, "agent", agent["id"])
            return row if row["used"] >= 2 else None

        row = await wait_for(agent_used, timeout=10, interval=0.1)
        assert row["limit"] == 100, row
        for _ in range(row["remaining"]):
            r = await c.post(f"/v1/agents/{agent['id']}/chat/completions", headers=me,
                             json={"messages": [{"role": "user", "content": "hello"}]})
            assert r.status_code == 200, r.text
        r = await c.post(f"/v1/agents/{agent['id']}/chat/completions", headers=me,
                         json={"messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 429, r.text
        assert r.headers["content-type"].startswith("application/problem+json") and int(r.headers["retry-after"]) > 0
        assert (await _usage(c, me, "agent", agent["id"]))["remaining"] == 0
        # ... and the server's own quota for this user is untouched by all those agent runs
        assert (await _usage(c, me, "server", ref))["used"] == before["used"]


# -- request logs (issue 18 part 3) ---------------------------------------------------------------------


async def test_request_logs_own_calls_owner_view_without_caller_ids_and_admin_csv(hosted: Hosted):
    """Calls made through the gateway reach the crawler's request log (call events over NATS): a user
    reads their own last 100 calls and never another user's; the server's owner (alice) sees calls to
    it with callers pseudonymised; an admin exports CSV. All through the gateway's /api/v1/logs."""
    import csv
    import io

    (alice_id, _), (bob_id, _) = hosted.users["alice"], hosted.users["bob"]
    alice, bob = hosted.auth("alice"), hosted.auth("bob")
    args: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=hosted.url, timeout=60) as c:
        # a server alice surely owns (the time package may be listed by another test's owner first)
        own = (await c.get("/api/v1/names/mine", headers=alice)).json()["platform_namespace"]
        sub = await submit_archive(c, alice, {"name": f"{own}/logged-{uuid.uuid4().hex[:6]}", "version": "1.0.0",
                                              "runtime": "python", "entrypoint": "server.py"},
                                   {"server.py": PING_SERVER, "requirements.txt": "mcp==2.3.0\n"})
        await published(c, sub["slug"], alice)
    slug = sub["slug"]
    url = f"{hosted.url}/mcp/{slug}"
    async with httpx.AsyncClient(base_url=hosted.url, timeout=30) as c:
        for i in range(0, 104, 8):
            await asyncio.gather(*(modern_call(c, url, alice, "ping", args, rid=n)
                                   for n in range(i, i + 8)))
        for n in range(3):
            text_result(await modern_call(c, url, bob, "ping", args, rid=n))

        async def page(headers: dict[str, str], **params: Any) -> dict[str, Any]:
            r = await c.get("/api/v1/logs/calls", params=params, headers=headers)
            assert r.status_code == 200, r.text
            return r.json()

        async def bob_logged() -> bool:
            return len((await page(bob, server=slug))["items"]) >= 3
        await wait_for(bob_logged, timeout=30)

        mine = await page(alice, limit=100)
        assert len(mine["items"]) == 100 and mine["next_cursor"]
        assert {i["caller"] for i in mine["items"]} == {alice_id}
        assert all(i["server"] and i["method"] and i["status"] for i in mine["items"])
        assert bob_id not in json.dumps(mine)
        theirs = await page(bob, server=slug)
        assert {i["caller"] for i in theirs["items"]} == {bob_id}
        assert [i["tool"] for i in theirs["items"][:3]] == ["ping"] * 3
        assert (await c.get("/api/v1/logs/calls", params={"view": "all"}, headers=bob)).status_code == 403
        r = await c.get("/api/v1/logs/calls", params={"view": "servers", "server": slug}, headers=bob)
        assert r.status_code == 404  # not bob's server
        assert (await c.get("/api/v1/logs/calls")).status_code == 401

        owner = await page(alice, view="servers", server=slug, limit=100)
        assert owner["items"] and alice_id not in json.dumps(owner) and bob_id not in json.dumps(owner)
        assert all(i["caller"].startswith("caller-") for i in owner["items"])
        assert len({i["caller"] for i in owner["items"]}) == 2  # alice and bob, told apart, unnamed

        r = await c.get("/api/v1/logs/calls", params={"view": "all", "format": "csv", "server": slug},
                        headers=hosted.admin)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert {row["caller"] for row in rows} >= {alice_id, bob_id} and len(rows) >= 107
