"""A source archive of a tiny MCP server written here, and deployments that must fail with a reason
a user can act on (and leave nothing running)."""

from __future__ import annotations

import textwrap
import uuid

import pytest

from services.deployer.tests.deployer_testkit import crashing_server, make_archive, python_server
from wemcp.common.events.servers import ServerSubmitted
from wemcp.devstack.testing import serve_app

TINY_SERVER = textwrap.dedent('''
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("tiny")

    @app.tool()
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    @app.prompt()
    def greet(name: str) -> str:
        return f"Say hello to {name}"

    if __name__ == "__main__":
        app.run()
''')



async def test_source_archive_deploys_with_its_tools(deployer, tmp_path):
    h = deployer
    spec = python_server(tmp_path / "archives", "server.py", TINY_SERVER)
    digest = spec["archive"]["sha256"]
    d = await h.deploy("tiny", "Tiny", spec)
    assert [t["name"] for t in d["tools"]] == ["shout"]
    assert d["tools"][0]["input_schema"]["properties"]["text"]["type"] == "string"
    assert [p["name"] for p in d["prompts"]] == ["greet"]
    assert d["package_version"] == digest[:12]


async def test_package_that_does_not_exist_fails_with_reason(deployer):
    h = deployer
    spec = {"packages": [{"registryType": "npm", "identifier": f"@wemcp-nonexistent/no-such-pkg-{uuid.uuid4().hex[:8]}",
                          "version": "1.0.0"}]}
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="ghost", name="Ghost", spec=spec))
    d = await h.until_status("ghost", "failed", "deployed")
    assert d["status"] == "failed"
    assert "does not exist" in d["reason"] and "check the package name" in d["reason"]
    failed = [e for e in await h.outbox("server.deploy_failed") if e["slug"] == "ghost"]
    assert len(failed) == 1 and failed[0]["reason"] == d["reason"]
    # every event of the deployment is stamped (generation 1, seq 1, 2, ...), the failure last
    events = [e for e in await h.outbox() if e["slug"] == "ghost" and e["subject"] != "server.submitted"]
    assert [(e["generation"], e["seq"]) for e in events] == [(1, i) for i in range(1, len(events) + 1)]
    assert len(events) >= 3 and events[-1]["subject"] == "server.deploy_failed"


async def test_pypi_version_that_does_not_exist_fails_with_reason(deployer):
    h = deployer
    spec = {"packages": [{"registryType": "pypi", "identifier": "mcp-server-time", "version": "0.0.0.1"}]}
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="badver", name="Bad", spec=spec))
    d = await h.until_status("badver", "failed", "deployed")
    assert "no such version" in d["reason"], d["reason"]


async def test_server_that_crashes_at_start_fails_with_redacted_log_tail(deployer, tmp_path):
    h = deployer
    spec = crashing_server(tmp_path / "archives", '"booting with key " + os.environ.get("DEMO_API_KEY", "none")',
                           '"Authorization: Bearer sk-live-abcdef123456"')
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="crashy", name="Crashy", spec=spec))
    d = await h.until_status("crashy", "failed", "deployed")
    assert d["status"] == "failed"
    assert "crashed at start" in d["reason"] and "exited (code 1)" in d["reason"], d["reason"]
    assert "config file /etc/tiny.conf missing" in d["logs"]
    assert "sk-live-abcdef123456" not in d["logs"] and "[redacted]" in d["logs"]
    assert d["runtime"]["state"] == "stopped"
    assert "crashy" not in h.orch.bridge.hosted


async def test_invalid_spec_fails_at_once(deployer):
    h = deployer
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="bad-spec", name="Bad",
                                    spec={"packages": [{"registryType": "npm", "identifier": "Not A Name!"}]}))
    d = await h.until_status("bad-spec", "failed")
    assert "not a valid npm package name" in d["reason"]


async def test_archive_with_path_traversal_is_refused(deployer, tmp_path):
    h = deployer
    digest = make_archive(tmp_path / "archives", {"../escape.py": "print(1)"})
    spec = {"archive": {"sha256": digest, "manifest": {"command": "python", "args": ["escape.py"]}}}
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="escape", name="Escape", spec=spec))
    d = await h.until_status("escape", "failed")
    assert "outside its root" in d["reason"]
    assert not (h.orch.installer.pkgs / "escape.py").exists()


async def test_unknown_deployment_is_problem_json(deployer):
    r = await deployer.client.get("/api/v1/deployments/nope")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await deployer.client.post("/api/v1/deployments/plan", json={"slug": "x", "spec": {"packages": []}})
    assert r.status_code == 400 and "nothing to deploy" in r.json()["detail"]
    r = await deployer.client.post("/api/v1/deployments/plan", content=b"{not json",
                                  headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = await deployer.client.post("/api/v1/deployments/plan", json={
        "slug": "t", "spec": {"packages": [{"registryType": "npm", "identifier": "left-pad", "version": "1.3.0"}]}})
    assert r.status_code == 200 and "npm install" in r.json()["actions"][0]


async def test_archive_uploaded_to_the_catalog_is_fetched_and_deployed(deployer, tmp_path):
    """The catalog's spec shape (runtime + entrypoint, dependencies from requirements.txt, the file
    kept by the catalog): the deployer fetches it from the catalog's internal endpoint, checks its
    digest, installs and introspects it; an unknown digest fails with a reason."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from wemcp.common.trust import InvalidAssertion, Verifier, environment_ring

    store: dict[str, bytes] = {}
    asked: list[str] = []
    other = tmp_path / "catalog-side"
    other.mkdir()
    digest = make_archive(other, {"server.py": TINY_SERVER, "requirements.txt": "mcp==2.3.0\n"})
    store[digest] = (other / f"{digest}.tar.gz").read_bytes()

    catalog_credential = Verifier(environment_ring(), "catalog")

    async def archive(request):
        sha = request.path_params["sha"]
        try:  # as the catalog's runtime does: the platform's service credential, or 401
            assert catalog_credential.verify(request.headers.get("x-wemcp-assertion", "")).issuer == "deployer"
        except InvalidAssertion:
            return Response(status_code=401)
        asked.append(sha)
        if sha not in store:
            return Response(status_code=404)
        return Response(store[sha], media_type="application/gzip")

    async with serve_app(Starlette(routes=[Route("/internal/archives/{sha}", archive)])) as catalog_url:
        deployer.app.state.runtime.extras["orchestrator"].installer.archive_source = catalog_url
        spec = {"name": "io.github.x/tiny", "version": "1.0.0", "packages": [], "remotes": [],
                "archive": {"sha256": digest, "size": len(store[digest]), "runtime": "python",
                            "entrypoint": "server.py", "args": [], "environmentVariables": []}}
        await deployer.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="fetched", name="Tiny", spec=spec))
        d = await deployer.until_status("fetched", "deployed", "failed")
        assert d["status"] == "deployed", (d["reason"], d["logs"])
        assert [t["name"] for t in d["tools"]] == ["shout"] and asked == [digest]
        assert (tmp_path / "archives" / f"{digest}.tar.gz").read_bytes() == store[digest]

        missing = "ab" * 32
        spec["archive"] = {**spec["archive"], "sha256": missing}
        await deployer.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="nofile", name="No", spec=spec))
        d = await deployer.until_status("nofile", "failed", "deployed")
        assert "upload it again" in d["reason"], d["reason"]

        # a catalog (or anything between) answering other bytes than the address names: refused, not stored
        tampered = "cd" * 32
        store[tampered] = store[digest]
        spec["archive"] = {**spec["archive"], "sha256": tampered}
        await deployer.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="tampered", name="T", spec=spec))
        d = await deployer.until_status("tampered", "failed", "deployed")
        assert "does not match its sha256" in d["reason"], d["reason"]
        assert asked[-1] == tampered and not list((tmp_path / "archives").glob(f"*{tampered}*"))


@pytest.mark.parametrize("deployer", [{"sandbox": "bwrap", "bwrap": "/nonexistent/bwrap"}], indirect=True)
async def test_without_a_working_sandbox_hosted_deploys_fail_with_the_fix(deployer, tmp_path):
    """Fail closed: no sandbox works here (bubblewrap required but missing), so nothing is installed or
    started and the deploy fails with the one line naming the fix; the deployer itself stays up (remote
    and OpenAPI servers need no sandbox)."""
    h = deployer
    assert h.orch.caps.mode == "none"
    r = await h.client.get("/healthz")
    assert r.status_code == 200
    marker = tmp_path / "ran"
    digest = make_archive(tmp_path / "archives", {"server.py": f"open({str(marker)!r}, 'w')\n"})
    spec = {"archive": {"sha256": digest, "manifest": {"command": "python", "args": ["server.py"]}}}
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="unboxed", name="Unboxed", spec=spec))
    d = await h.until_status("unboxed", "failed", "deployed")
    assert d["reason"] == ("wemcp-deployer: no working sandbox (bubblewrap not found at /nonexistent/bwrap): "
                           "install bubblewrap (make sandbox-tools, or apt-get install bubblewrap) or run the "
                           "deployer as root; see README#isolation"), d["reason"]
    failed = [e for e in await h.outbox("server.deploy_failed") if e["slug"] == "unboxed"]
    assert len(failed) == 1 and failed[0]["reason"] == d["reason"]
    assert not marker.exists() and "unboxed" not in h.orch.bridge.hosted


async def test_network_is_refused_where_a_server_cannot_have_a_namespace_of_its_own(deployer, tmp_path, monkeypatch):
    """A server with network reaches the internet through the egress proxy only, which needs a
    network namespace per server (tests/security/test_hosted_egress.py); a sandbox without one (the
    trusted set-up benchmarks use) refuses such a server before installing anything."""
    h = deployer
    from wemcp.deployer import sandbox

    monkeypatch.setattr(h.orch.bridge, "caps", sandbox.Capabilities("restricted", own_uid=False, netns=False))
    digest = make_archive(tmp_path / "archives", {"server.py": "print('never started')\n"})
    spec = {"archive": {"sha256": digest, "manifest": {"command": "python", "args": ["server.py"]}}, "network": True}
    await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="wants-net", name="Net", spec=spec))
    d = await h.until_status("wants-net", "failed", "deployed")
    assert d["status"] == "failed" and "cannot have network here" in d["reason"], d["reason"]
