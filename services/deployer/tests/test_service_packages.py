"""End to end with real packages from the registries: submitted → deployed with their real tool lists,
callable through the bridge in both protocol eras, and nothing left running after disable."""

from __future__ import annotations

import uuid

import psutil

from services.deployer.tests.deployer_testkit import bridge_client, wait_for
from wemcp.common.events.servers import ServerDisabled, ServerEnabled, ServerSubmitted

EVERYTHING = {"packages": [{"registryType": "npm", "identifier": "@modelcontextprotocol/server-everything",
                            "version": "2026.8.31", "transport": {"type": "stdio"}}]}
TIME = {"packages": [{"registryType": "pypi", "identifier": "mcp-server-time", "version": "2026.10.19",
                      "transport": {"type": "stdio"},
                      "packageArguments": [{"type": "named", "name": "--local-timezone", "value": "UTC"}]}]}


def _pids_of(h, slug: str) -> list[int]:
    hosted = h.orch.bridge.hosted.get(slug)
    return [c.proc.pid for c in hosted.children.values() if c.proc and c.alive] if hosted else []


async def test_npm_server_everything_deploys_with_its_tools_and_stops_on_disable(deployer):
    h = deployer
    sid = uuid.uuid4()
    await h.publish(ServerSubmitted(server_id=sid, slug="everything", name="Everything", spec=EVERYTHING))
    d = await h.until_status("everything", "deployed", "failed")
    assert d["status"] == "deployed", (d["reason"], d["logs"])
    names = {t["name"] for t in d["tools"]}
    assert {"echo", "get-sum"} <= names, names
    echo = next(t for t in d["tools"] if t["name"] == "echo")
    assert echo["input_schema"]["properties"]["message"]["type"] == "string"
    assert d["prompts"] and d["resources"]
    assert d["package_version"] == "2026.8.31"
    assert d["protocol_versions"][0].startswith("2025-")
    assert "2026-07-28" in d["protocol_versions"]
    steps = [s["step"] for s in d["steps"]]
    assert steps[0] == "queued" and "installing" in steps and "introspecting" in steps and steps[-1] == "deployed"

    deployed = [e for e in await h.outbox("server.deployed") if e["slug"] == "everything"]
    assert len(deployed) == 1 and {t["name"] for t in deployed[0]["tools"]} == names
    assert deployed[0]["endpoints"][0]["url"] == d["endpoint"]
    progress = [e["step"] for e in await h.outbox("server.deploying")]
    assert progress[0] == "queued" and "starting" in progress

    # callable through the bridge, legacy sessions and the stateless era
    async with bridge_client(d["endpoint"], mode="legacy") as c:
        r = await c.call_tool("echo", {"message": "hi there"})
        assert "hi there" in r.content[0].text
    async with bridge_client(d["endpoint"], mode="auto") as c:
        assert c.protocol_version == "2026-07-28"
        r = await c.call_tool("get-sum", {"a": 2, "b": 40})
        assert "42" in r.content[0].text

    pids = _pids_of(h, "everything")
    assert pids
    procs = [psutil.Process(p) for p in pids]
    family = {p.pid for proc in procs for p in [proc, *proc.children(recursive=True)]}
    await h.publish(ServerDisabled(server_id=sid, slug="everything", reason="test"))
    d = await h.until_status("everything", "disabled")
    assert d["runtime"]["state"] == "stopped"
    await wait_for(lambda: _all_gone(family), timeout=10)

    await h.publish(ServerEnabled(server_id=sid, slug="everything"))
    d = await h.until_status("everything", "deployed", "failed")
    assert d["status"] == "deployed" and d["generation"] == 2


async def _all_gone(pids):
    return all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in pids)


async def test_pypi_mcp_server_time_deploys_and_answers(deployer):
    h = deployer
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="time", name="Time", spec=TIME))
    d = await h.until_status("time", "deployed", "failed")
    assert d["status"] == "deployed", (d["reason"], d["logs"])
    assert {t["name"] for t in d["tools"]} == {"get_current_time", "convert_time"}
    assert d["package_version"] == "2026.10.19"
    async with bridge_client(d["endpoint"], mode="legacy") as c:
        r = await c.call_tool("get_current_time", {"timezone": "Asia/Shanghai"})
        assert "Asia/Shanghai" in r.content[0].text


async def test_local_stdio_server_is_listed_once_without_secrets_and_not_hosted(deployer):
    """"hosting": "local": users run it on their machines; the page still shows its tools."""
    h = deployer
    spec = {**TIME, "hosting": "local",
            "packages": [{**TIME["packages"][0], "environmentVariables": [
                {"name": "TIME_API_KEY", "isSecret": True, "isRequired": True}]}]}
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="time-local", name="Time", spec=spec))
    d = await h.until_status("time-local", "deployed", "failed")
    assert d["status"] == "deployed", (d["reason"], d["logs"])
    assert {t["name"] for t in d["tools"]} == {"get_current_time", "convert_time"}
    assert d["tools"][0]["input_schema"]["type"] == "object"
    assert d["endpoint"] is None and d["backend"] == "unhosted"
    steps = [s["step"] for s in d["steps"]]
    assert "introspecting" in steps and "stopped" in steps and steps[-1] == "deployed"
    event = next(e for e in await h.outbox("server.deployed") if e["slug"] == "time-local")
    assert event["endpoints"] == [] and event["backend"] == "unhosted"
    assert {t["name"] for t in event["tools"]} == {"get_current_time", "convert_time"}
    assert event["package_version"] == "2026.10.19"
    # nothing of it runs or is routed here
    assert "time-local" not in h.orch.bridge.hosted
    r = await h.client.post("/api/v1/deployments/plan", json={"slug": "r", "spec": {
        "remotes": [{"type": "streamable-http", "url": "https://example.com/mcp"}], "hosting": "local"}})
    assert r.status_code == 400 and "never hosted" in r.text
