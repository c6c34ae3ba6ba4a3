"""Cloud backends offline.

- The signature code (`signing.py`, written from the clouds' specs, not the SDKs) reproduces the
  clouds' own published examples; the same code is the verifier of the fake cloud.
- plan() is golden and side-effect free.
- The real code zips are built from the registries, their contents checked, and the FC zips are
  extracted and *run* (bootstrap → bridge → stdio server) and introspected.
- The official SDKs (alibabacloud-fc20230330, tencentcloud-sdk-python-scf) deploy to a loopback
  HTTPS server that recomputes each SDK signature from the raw request and checks method, path and body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import io
import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.deployer.tests.deployer_testkit import CACHE_DIR, self_signed, wait_for
from wemcp.common.trust import environment_ring, platform_bridge_headers
from wemcp.deployer.artifacts import ArtifactBuilder
from wemcp.deployer.backends.base import DeployError, Target
from wemcp.deployer.backends.cloud import (
    KEYS_PLACEHOLDER,
    AliyunFcDeployer,
    CloudCredentials,
    TencentScfDeployer,
    accepted_env,
    bridge_env,
)
from wemcp.deployer.install import Installer
from wemcp.deployer.introspect import introspect
from wemcp.deployer.spec import parse_spec
from wemcp.devstack.infra import free_port
from wemcp.testkit.cloudsign import acs3_sign, acs3_verify, tc3_sign, tc3_verify

NPM = parse_spec({"packages": [{"registryType": "npm", "identifier": "@modelcontextprotocol/server-everything",
                                "version": "2026.8.31"}]})
PYPI = parse_spec({"packages": [{"registryType": "pypi", "identifier": "mcp-server-time", "version": "2026.10.19"}]})
TARGET = Target("everything", uuid.UUID(int=7), NPM)
TIME = Target("time", uuid.UUID(int=8), PYPI)
AK, SK = "LTAI-test-key", "test-secret-do-not-log"
GOLDEN = Path(__file__).parent / "golden"


# ------------------------------------------------------------------ published known-answer vectors
# Aliyun, "V3版本请求体&签名机制" (help.aliyun.com/zh/sdk/product-overview/v3-request-structure-and-signature),
# signature example: POST ecs RunInstances, empty body.
ALIYUN_DOC = dict(method="POST", path="/", query={"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
                                                  "RegionId": "cn-shanghai"},
                  headers={"host": "ecs.cn-shanghai.aliyuncs.com", "x-acs-action": "RunInstances",
                           "x-acs-version": "2014-05-26", "x-acs-date": "2023-10-26T10:22:32Z",
                           "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d"}, body=b"")
ALIYUN_DOC_SIG = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
# Tencent Cloud, "签名方法 v3" (cloud.tencent.com/document/api/213/30654): CVM DescribeInstances.
TENCENT_DOC_PAYLOAD = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
TENCENT_DOC_SIG = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"


def test_acs3_matches_aliyun_published_example_and_verifier_agrees():
    h = acs3_sign(**ALIYUN_DOC, access_key_id="YourAccessKeyId", access_key_secret="YourAccessKeySecret")
    assert h["authorization"] == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;"
        "x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=" + ALIYUN_DOC_SIG)
    when = dt.datetime(2023, 10, 26, 10, 22, 32, tzinfo=dt.UTC).timestamp()
    check = dict(method="POST", path="/", query=ALIYUN_DOC["query"], secrets={"YourAccessKeyId": "YourAccessKeySecret"},
                 now=when)
    assert acs3_verify(headers=h, body=b"", **check) is None
    assert acs3_verify(headers=h, body=b"{}", **check) == "x-acs-content-sha256 does not match the body"
    assert acs3_verify(headers={**h, "x-acs-action": "DeleteInstances"}, body=b"", **check) == "SignatureDoesNotMatch"
    assert acs3_verify(headers=h, body=b"", **{**check, "now": when + 3600}) == "x-acs-date is too far from now"


def test_tc3_matches_tencent_published_example_and_verifier_agrees():
    sig = tc3_sign(service="cvm", host="cvm.tencentcloudapi.com", action="DescribeInstances",
                   payload=TENCENT_DOC_PAYLOAD, timestamp=1551113065,
                   secret_id="AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", secret_key="Gu5t9xGARNpq86cd98joQYCN3EXAMPLE")
    assert sig["signature"] == TENCENT_DOC_SIG
    assert sig["authorization"].startswith("TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/"
                                           "2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, ")
    headers = {"authorization": sig["authorization"], "content-type": "application/json; charset=utf-8",
               "host": "cvm.tencentcloudapi.com", "x-tc-timestamp": "1551113065"}
    check = dict(method="POST", path="/", query="", service="cvm", now=1551113065,
                 secrets={"AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE": "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"})
    assert tc3_verify(headers=headers, body=TENCENT_DOC_PAYLOAD, **check) is None
    assert tc3_verify(headers=headers, body=TENCENT_DOC_PAYLOAD + b" ", **check) == "AuthFailure.SignatureFailure"
    assert tc3_verify(headers=headers, body=TENCENT_DOC_PAYLOAD, **{**check, "service": "scf"}) is not None


# ------------------------------------------------------------------ golden plans
def _golden(name: str, value: object) -> None:
    path = GOLDEN / name
    if os.environ.get("WEMCP_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
    assert json.loads(json.dumps(value)) == json.loads(path.read_text()), f"{name} changed (WEMCP_UPDATE_GOLDEN=1)"


def test_plans_are_golden_and_side_effect_free(tmp_path: Path):
    before = set(tmp_path.iterdir())
    fc = AliyunFcDeployer(account_id="123", region="cn-hangzhou").plan(TIME)
    scf = TencentScfDeployer().plan(TARGET)
    _golden("aliyun-fc.plan.json", {"actions": fc.actions, "requests": fc.requests, "s.yaml": fc.artifacts["s.yaml"]})
    _golden("tencent-scf.plan.json", {"actions": scf.actions, "requests": scf.requests})
    create = fc.requests[0]
    assert (create["method"], create["path"]) == ("POST", "/2023-03-30/functions")
    assert create["body"]["runtime"] == "custom.debian12"
    assert create["body"]["customRuntimeConfig"] == {"command": ["/code/bootstrap"], "port": 8080}
    assert create["body"]["internetAccess"] is False  # the spec did not ask for network
    assert fc.artifacts["s.yaml"]["resources"]["wemcp-time"]["component"] == "fc3"
    assert scf.requests[0]["body"]["Type"] == "HTTP" and scf.requests[0]["body"]["Runtime"] == "Nodejs18.15"
    assert set(tmp_path.iterdir()) == before  # nothing written


# ------------------------------------------------------------------ real code zips
@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> ArtifactBuilder:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = tmp_path_factory.mktemp("artifacts")
    return ArtifactBuilder(Installer(CACHE_DIR, archive_dir=work, venv_python="/usr/bin/python3"), work)


def _extract(zip_path: Path, dest: Path) -> dict[str, int]:
    modes = {}
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(dest / info.filename, mode)
            modes[info.filename] = mode
    return modes


async def _start_entry(entry: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """Run a function's entry as its runtime would (a process group of its own, with exactly ``env``)
    until its bridge answers ``/healthz`` on ``port``; stopped again if it never does."""
    proc = subprocess.Popen([str(entry)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)

    async def healthy() -> bool:
        try:
            async with httpx2.AsyncClient() as c:
                return (await c.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx2.HTTPError:
            assert proc.poll() is None, "the function's entry exited"
            return False

    try:
        await wait_for(healthy, timeout=30)
    except BaseException:
        os.killpg(proc.pid, 9)
        proc.wait()
        raise
    return proc


async def _run_bootstrap(root: Path, entry: str, slug: str = "time") -> list[str]:
    port = free_port()
    # the function's environment as the backends set it: the keys derived for its slug
    env = {"PATH": os.environ["PATH"], "WEMCP_BRIDGE_PORT": str(port), **bridge_env(environment_ring(), slug)}
    proc = await _start_entry(root / entry, env, port)
    try:
        async with httpx2.AsyncClient() as c:  # the public trigger answers only the platform
            assert (await c.post(f"http://127.0.0.1:{port}/mcp", json={})).status_code == 401
        listing = await introspect(f"http://127.0.0.1:{port}/mcp", timeout=60, headers=platform_bridge_headers(slug))
        return [t.name for t in listing.tools]
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


async def test_code_zips_contain_the_server_and_run(builder: ArtifactBuilder, tmp_path: Path):
    fc_py = await builder.build(PYPI, "aliyun-fc")
    scf_py = await builder.build(PYPI, "tencent-scf")
    fc_npm = await builder.build(NPM, "aliyun-fc")
    # contents: the entry, the bridge, the package built for the cloud's interpreter
    for z, entry, abi in ((fc_py, "bootstrap", "cpython-311"), (scf_py, "scf_bootstrap", "cpython-310")):
        modes = _extract(z.path, tmp_path / z.path.stem)
        assert modes[entry] == 0o755 and modes["wemcp_bridge.py"] == 0o644
        assert z.version == "2026.10.19" and "python/mcp_server_time/__init__.py" in z.files
        assert any(f.startswith("python/pydantic_core/") and abi in f for f in z.files), abi
        script = (tmp_path / z.path.stem / entry).read_text()
        port = 8080 if entry == "bootstrap" else 9000
        assert f'--port "${{WEMCP_BRIDGE_PORT:-{port}}}" -- python3 server_entry.py' in script
    npm_modes = _extract(fc_npm.path, tmp_path / "npm")
    assert npm_modes["bootstrap"] == 0o755 and "wemcp_bridge.js" in npm_modes
    assert "node_modules/@modelcontextprotocol/server-everything/package.json" in fc_npm.files
    assert "exec node wemcp_bridge.js" in (tmp_path / "npm" / "bootstrap").read_text()
    # run them as the function runtime would: bootstrap → bridge → stdio server, then introspect
    assert sorted(await _run_bootstrap(tmp_path / fc_py.path.stem, "bootstrap")) == ["convert_time", "get_current_time"]
    everything = await _run_bootstrap(tmp_path / "npm", "bootstrap")
    assert "echo" in everything and len(everything) >= 10


# ------------------------------------------------------------------ the SDKs against a loopback HTTPS cloud
class FakeCloud:
    """Answers like FC 3.0 (ROA, JSON) and SCF (POST /, X-TC-Action) after checking the signature."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.seen: list[dict] = []
        self.functions: dict[str, dict] = {}
        self.triggers: set[str] = set()
        self.scf_polls = 0

        async def any_route(request: Request) -> Response:
            body = await request.body()
            h = {k.lower(): v for k, v in request.headers.items()}
            query = dict(request.query_params)
            if "x-tc-action" in h:
                reason = tc3_verify(method=request.method, path=request.url.path, query=request.url.query,
                                    headers=h, body=body, service="scf", secrets={AK: SK})
                self.seen.append({"cloud": "scf", "action": h["x-tc-action"], "method": request.method,
                                  "path": request.url.path, "body": json.loads(body or b"{}"), "valid": reason is None,
                                  "headers": h})
                return self.scf(h["x-tc-action"], json.loads(body or b"{}"), reason)
            reason = acs3_verify(method=request.method, path=request.url.path, query=query, headers=h, body=body,
                                 secrets={AK: SK})
            self.seen.append({"cloud": "fc", "action": h.get("x-acs-action"), "method": request.method,
                              "path": request.url.path, "body": json.loads(body or b"{}"), "valid": reason is None,
                              "headers": h})
            return self.fc(request.method, request.url.path, json.loads(body or b"{}"), reason)

        self.app = Starlette(routes=[Route("/{p:path}", any_route, methods=["GET", "POST", "PUT", "DELETE"])])

    def fc(self, method: str, path: str, body: dict, reason: str | None) -> Response:
        if reason:
            return JSONResponse({"Code": "SignatureDoesNotMatch", "Message": reason, "RequestId": "r"}, 403)
        parts = path.strip("/").split("/")  # 2023-03-30/functions[/name[/triggers[/name]]]
        if method == "POST" and parts[1:] == ["functions"]:
            if body["functionName"] in self.functions:
                return JSONResponse({"Code": "FunctionAlreadyExists", "Message": "exists", "RequestId": "r"}, 409)
            self.functions[body["functionName"]] = body
            return JSONResponse({**{k: v for k, v in body.items() if k != "code"}, "state": "Active"})
        if method == "PUT" and len(parts) == 3:
            self.functions[parts[2]] = {**self.functions[parts[2]], **body}
            return JSONResponse({"functionName": parts[2], "state": "Active"})
        if method == "POST" and parts[3:] == ["triggers"]:
            if parts[2] in self.triggers:
                return JSONResponse({"Code": "TriggerAlreadyExists", "Message": "exists", "RequestId": "r"}, 409)
            self.triggers.add(parts[2])
            url = f"https://{parts[2]}-123.cn-hangzhou.fcapp.run"
            return JSONResponse({**body, "httpTrigger": {"urlInternet": url}})
        if method == "GET" and len(parts) == 3:
            fn = self.functions.get(parts[2])
            return JSONResponse({"functionName": parts[2], "state": "Active"} if fn else
                                {"Code": "FunctionNotFound", "Message": "no", "RequestId": "r"}, 200 if fn else 404)
        if method == "DELETE":
            gone = self.triggers.discard(parts[2]) if len(parts) == 5 else self.functions.pop(parts[2], None)
            return Response(status_code=204 if gone is not None or len(parts) == 5 else 404)
        return JSONResponse({"Code": "NotFound", "Message": path, "RequestId": "r"}, 404)

    def scf(self, action: str, body: dict, reason: str | None) -> Response:
        def ok(**extra: object) -> JSONResponse:
            return JSONResponse({"Response": {**extra, "RequestId": "r"}})

        def err(code: str, msg: str) -> JSONResponse:
            return JSONResponse({"Response": {"Error": {"Code": code, "Message": msg}, "RequestId": "r"}})

        if reason:
            return err("AuthFailure.SignatureFailure", reason)
        fn = body.get("FunctionName", "")
        if action == "CreateFunction":
            if fn in self.functions:
                return err("ResourceInUse.Function", "exists")
            self.functions[fn] = body
            return ok()
        if action == "UpdateFunctionCode":
            self.functions[fn]["Code"] = {"ZipFile": body["ZipFile"]}
            return ok()
        if action == "UpdateFunctionConfiguration":
            self.functions[fn].update({k: v for k, v in body.items() if k != "FunctionName"})
            return ok()
        if action == "GetFunction":
            self.scf_polls += 1  # first poll: still creating, so the backend must poll
            return ok(FunctionName=fn, Status="Creating" if self.scf_polls == 1 else "Active")
        if action == "CreateTrigger":
            return ok(TriggerInfo={"TriggerName": "mcp", "Type": "apigw", "TriggerDesc": json.dumps(
                {"service": {"subDomain": "service-abc-123.gz.apigw.tencentcs.com"},
                 "release": {"environmentName": "release"}, "api": {"requestConfig": {"path": "/"}}})})
        if action == "DeleteFunction":
            return ok() if self.functions.pop(fn, None) else err("ResourceNotFound.Function", "no")
        return err("InvalidAction", action)

    async def __aenter__(self) -> tuple[str, str]:
        cert, key = (str(p) for p in self_signed(self.tmp, "127.0.0.1", dns_names=["localhost"]))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, lifespan="off",
                                                    ssl_certfile=cert, ssl_keyfile=key, timeout_graceful_shutdown=1))
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        await wait_for(lambda: asyncio.sleep(0, self.server.started), timeout=10, interval=0.01)
        return f"https://127.0.0.1:{sock.getsockname()[1]}", cert

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.task


async def _progress_into(steps: list[str]):
    async def progress(step: str, detail: str | None = None) -> None:
        steps.append(detail or step)
    return progress


def _zip_names(b64: str) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(base64.b64decode(b64))).namelist()


async def test_official_sdks_deploy_to_a_loopback_https_cloud(builder: ArtifactBuilder, tmp_path: Path):
    fake = FakeCloud(tmp_path)
    creds = CloudCredentials(AK, SK, "123")
    async with fake as (url, ca):
        fc = AliyunFcDeployer(account_id="123", credentials=creds, endpoint=url, live=True, builder=builder, ca_file=ca)
        steps: list[str] = []
        out = await fc.deploy(TIME, await _progress_into(steps))
        assert [s for s in steps if s[0].isupper()] == ["CreateFunction", "CreateTrigger"]
        assert out.endpoint == "https://wemcp-time-123.cn-hangzhou.fcapp.run/mcp"
        assert out.package_version == "2026.10.19"
        steps.clear()
        await fc.deploy(TIME, await _progress_into(steps))  # idempotent: exists → update, trigger kept
        assert [s for s in steps if s[0].isupper()] == ["CreateFunction", "UpdateFunction", "CreateTrigger"]
        assert (await fc.status("time")).state == "running"
        await fc.undeploy("time")
        assert (await fc.status("time")).state == "stopped"

        scf = TencentScfDeployer(credentials=creds, endpoint=url, live=True, builder=builder, ca_file=ca,
                                 poll_interval=0.05)
        steps.clear()
        out = await scf.deploy(TIME, await _progress_into(steps))
        assert [s for s in steps if s[0].isupper()] == ["CreateFunction", "GetFunction", "CreateTrigger"]
        assert out.endpoint == "https://service-abc-123.gz.apigw.tencentcs.com/release/mcp"
        steps.clear()
        await scf.deploy(TIME, await _progress_into(steps))
        assert [s for s in steps if s[0].isupper()] == [
            "CreateFunction", "UpdateFunctionCode", "UpdateFunctionConfiguration", "GetFunction", "CreateTrigger"]
        await scf.undeploy("time")
        assert "wemcp-time" not in fake.functions

        # a wrong secret: the SDK signs, the verifier refuses, the backend reports it
        for bad in (AliyunFcDeployer(account_id="123", credentials=CloudCredentials(AK, "wrong", "1"), endpoint=url,
                                     live=True, builder=builder, ca_file=ca),
                    TencentScfDeployer(credentials=CloudCredentials(AK, "wrong", "1"), endpoint=url, live=True,
                                       builder=builder, ca_file=ca)):
            with pytest.raises(DeployError) as info:
                await bad.deploy(TIME, await _progress_into([]))
            assert "SignatureDoesNotMatch" in info.value.reason or "AuthFailure.SignatureFailure" in info.value.reason

    fc_seen = [s for s in fake.seen if s["cloud"] == "fc"]
    assert [(s["method"], s["path"], s["valid"]) for s in fc_seen[:2]] == [
        ("POST", "/2023-03-30/functions", True), ("POST", "/2023-03-30/functions/wemcp-time/triggers", True)]
    assert ("PUT", "/2023-03-30/functions/wemcp-time") in [(s["method"], s["path"]) for s in fc_seen]
    assert fc_seen[-1]["valid"] is False and all(s["valid"] for s in fc_seen[:-1])
    assert all(s["headers"]["authorization"].startswith("ACS3-HMAC-SHA256 ") for s in fc_seen)
    # the body the SDK sent is the golden plan's body, with the real zip in place of the placeholder
    plan = AliyunFcDeployer(account_id="123").plan(TIME).requests
    sent = fc_seen[0]["body"]
    # the function holds only the keys derived for its own slug (plans show a placeholder)
    own_keys = bridge_env(environment_ring(), TIME.slug)
    assert sent["environmentVariables"]["WEMCP_BRIDGE_KEYS"] == own_keys["WEMCP_BRIDGE_KEYS"]
    assert os.environ["WEMCP_SERVICE_KEYS"].split(":", 1)[1] not in json.dumps(fake.seen)
    assert {**sent, "code": {"zipFile": "<base64 of code.zip>"},
            "environmentVariables": {**sent["environmentVariables"], "WEMCP_BRIDGE_KEYS": KEYS_PLACEHOLDER}} \
        == plan[0]["body"]
    assert {"bootstrap", "wemcp_bridge.py", "server_entry.py"} <= set(_zip_names(sent["code"]["zipFile"]))
    assert fc_seen[1]["body"] == plan[1]["body"]

    tc_seen = [s for s in fake.seen if s["cloud"] == "scf"]
    assert [s["action"] for s in tc_seen[:4]] == ["CreateFunction", "GetFunction", "GetFunction", "CreateTrigger"]
    assert all(s["valid"] for s in tc_seen[:-1]) and tc_seen[-1]["valid"] is False
    assert all((s["method"], s["path"]) == ("POST", "/") for s in tc_seen)
    assert tc_seen[0]["headers"]["x-tc-version"] == "2018-04-16"
    assert tc_seen[0]["headers"]["x-tc-region"] == "ap-guangzhou"
    splan = TencentScfDeployer().plan(TIME).requests
    variables = tc_seen[0]["body"]["Environment"]["Variables"]
    assert {"Key": "WEMCP_BRIDGE_KEYS", "Value": own_keys["WEMCP_BRIDGE_KEYS"]} in variables
    placeheld = [v if v["Key"] != "WEMCP_BRIDGE_KEYS" else {**v, "Value": KEYS_PLACEHOLDER} for v in variables]
    assert {**tc_seen[0]["body"], "Code": {"ZipFile": "<base64 of code.zip>"},
            "Environment": {"Variables": placeheld}} == splan[0]["body"]
    assert "scf_bootstrap" in _zip_names(tc_seen[0]["body"]["Code"]["ZipFile"])
    assert tc_seen[3]["body"] == splan[2]["body"]
    assert "DeleteFunction" in [s["action"] for s in tc_seen]
    assert all(SK not in json.dumps(s) for s in fake.seen)  # the secret never travels


async def test_cloud_deploy_refuses_without_opt_in():
    for backend in (AliyunFcDeployer(account_id="1", credentials=CloudCredentials(AK, SK, "1")),
                    TencentScfDeployer(credentials=CloudCredentials(AK, SK, "1"))):
        async def progress(step: str, detail: str | None = None) -> None:
            raise AssertionError("nothing may be built or sent")

        with pytest.raises(DeployError) as info:
            await backend.deploy(TARGET, progress)
        assert "CLOUD_LIVE" in info.value.reason


def test_bridge_files_are_valid_programs():
    from wemcp.deployer.artifacts import RUNTIME_DIR as root
    assert subprocess.run(["node", "--check", str(root / "wemcp_bridge.js")]).returncode == 0
    assert subprocess.run([sys.executable, "-m", "py_compile", str(root / "wemcp_bridge.py")]).returncode == 0
    assert os.stat(root / "wemcp_bridge.py").st_mode & stat.S_IRUSR


# ------------------------------------------------------------------ a function's keys and its trigger
# Declared keys with values in the spec: a submission never carries them (the catalog keeps only
# names), but were one there, it must still not reach the function's configuration or code.
KEYED_TIME = Target("keyed-time", uuid.UUID(int=9), parse_spec({"packages": [{
    "registryType": "pypi", "identifier": "mcp-server-time", "version": "2026.10.19",
    "environmentVariables": [{"name": "TZ", "isSecret": True, "value": "Never/Baked-0001"}]}]}))
KEYED_EVERYTHING = Target("keyed-everything", uuid.UUID(int=10), parse_spec({"packages": [{
    "registryType": "npm", "identifier": "@modelcontextprotocol/server-everything", "version": "2026.8.31",
    "environmentVariables": [{"name": "MAPS_API_KEY", "isSecret": True, "isRequired": True,
                              "value": "baked-would-leak-0001"}]}]}))
NOT_IN_FUNCTIONS = ("Never/Baked-0001", "baked-would-leak-0001")


class Trigger:
    """A loopback stand-in of the cloud's HTTP trigger (FC http trigger, SCF API gateway): anonymous to
    the cloud, it forwards every request, headers and body, to the function's port and adds its own
    request id, as the real ones do."""

    def __init__(self, port: int) -> None:
        self.port = port

        async def forward(request: Request) -> Response:
            headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length", "connection")}
            headers["x-fc-request-id"] = uuid.uuid4().hex
            async with httpx2.AsyncClient(timeout=60) as c:
                r = await c.request(request.method, f"http://127.0.0.1:{self.port}{request.url.path}",
                                    content=await request.body(), headers=headers)
            kept = {k: v for k, v in r.headers.items() if k in ("content-type", "mcp-session-id", "allow")}
            return Response(r.content, r.status_code, headers=kept)

        self.app = Starlette(routes=[Route("/{p:path}", forward, methods=["GET", "POST", "DELETE"])])

    async def __aenter__(self) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, lifespan="off",
                                                    timeout_graceful_shutdown=1))
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        await wait_for(lambda: asyncio.sleep(0, self.server.started), timeout=10, interval=0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.task


class McpCaller:
    """JSON-RPC over the trigger, as the gateway speaks to a 2025-era function (one session per caller)."""

    def __init__(self, http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> None:
        self.http, self.url, self.headers = http, url, headers
        self.sid: str | None = None
        self.next_id = 0

    async def post(self, message: dict, extra: dict[str, str] | None = None) -> httpx2.Response:
        h = {**self.headers, **(extra or {}), **({"mcp-session-id": self.sid} if self.sid else {})}
        return await self.http.post(self.url, json=message, headers=h)

    async def request(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        r = await self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})
        assert r.status_code == 200, r.text
        return r.json()

    async def initialize(self) -> httpx2.Response:
        r = await self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "gateway", "version": "1"}}})
        if r.status_code == 200:
            self.sid = r.headers["mcp-session-id"]
            assert (await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
        return r


def _zip_texts(b64: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(b64))) as zf:
        return b"\n".join(zf.read(n) for n in zf.namelist())


async def _run_function(b64_zip: str, configuration: dict[str, str], tmp: Path):
    """Start what the cloud received, as its runtime would: the zip extracted, its entry executed with
    exactly the configured environment (the port the runtime assigns), behind a trigger."""
    root = tmp / uuid.uuid4().hex
    zpath = tmp / f"{root.name}.zip"
    zpath.write_bytes(base64.b64decode(b64_zip))
    _extract(zpath, root)
    port = free_port()
    env = {"PATH": os.environ["PATH"], **configuration, "WEMCP_BRIDGE_PORT": str(port)}
    return await _start_entry(root / "bootstrap", env, port), port


@contextlib.asynccontextmanager
async def _function_behind_trigger(function: dict, tmp: Path) -> AsyncIterator[tuple[str, int]]:
    """One function as the cloud received it, running behind a trigger: its MCP URL and the port of
    its entry; stopped on the way out."""
    proc, port = await _run_function(function["code"]["zipFile"], function["environmentVariables"], tmp)
    try:
        async with Trigger(port) as trigger:
            yield f"{trigger}/mcp", port
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


async def _sessions(port: int) -> int:
    async with httpx2.AsyncClient() as c:
        return (await c.get(f"http://127.0.0.1:{port}/healthz")).json()["sessions"]


async def test_functions_get_keys_per_call_and_answer_only_the_platform(builder: ArtifactBuilder, tmp_path: Path):
    """The function's configuration and code hold no key of the server and no platform key, only the
    key derived for its slug and the names of the variables calls may set; the code the clouds
    received, run behind a trigger, answers 401 to anyone but the platform for this slug, and starts
    each caller's server with the keys that caller's requests carry."""
    fake = FakeCloud(tmp_path)
    creds = CloudCredentials(AK, SK, "123")
    async with fake as (url, ca):
        fc = AliyunFcDeployer(account_id="123", credentials=creds, endpoint=url, live=True, builder=builder, ca_file=ca)
        scf = TencentScfDeployer(credentials=creds, endpoint=url, live=True, builder=builder, ca_file=ca,
                                 poll_interval=0.05)
        for backend, target in ((fc, KEYED_TIME), (fc, KEYED_TIME), (fc, KEYED_EVERYTHING),
                                (scf, KEYED_TIME), (scf, KEYED_TIME)):  # create, then update
            await backend.deploy(target, await _progress_into([]))
    ring = environment_ring()
    platform_secrets = [key.decode() for _, key in ring.keys]
    writes = [s for s in fake.seen if s["action"] in ("CreateFunction", "UpdateFunction", "UpdateFunctionCode",
                                                      "UpdateFunctionConfiguration") or s["method"] == "PUT"]
    assert {s["action"] for s in writes} >= {"CreateFunction", "UpdateFunctionCode", "UpdateFunctionConfiguration"}
    assert any(s["method"] == "PUT" for s in writes)  # FC's UpdateFunction
    for s in writes:
        sent = json.dumps(s["body"])
        zips = [z for z in (s["body"].get("code", {}).get("zipFile"), s["body"].get("Code", {}).get("ZipFile"),
                            s["body"].get("ZipFile")) if z]
        for secret in (*NOT_IN_FUNCTIONS, *platform_secrets):
            assert secret not in sent, f"{s['action']} carries a secret"
            assert all(secret.encode() not in _zip_texts(z) for z in zips), f"{s['action']}: the code holds a secret"
    # the configuration: the derived key of its own slug and the names, on create and on every update
    expected = {"keyed-time": bridge_env(ring, "keyed-time", ["TZ"]),
                "keyed-everything": bridge_env(ring, "keyed-everything", ["MAPS_API_KEY"])}
    assert expected["keyed-time"]["WEMCP_BRIDGE_ENV"] == "TZ" and accepted_env(KEYED_TIME.spec) == ["TZ"]
    for s in writes:
        env = s["body"].get("environmentVariables") or {
            v["Key"]: v["Value"] for v in (s["body"].get("Environment") or {}).get("Variables", [])}
        if not env:
            assert s["action"] == "UpdateFunctionCode"  # the code only; the configuration follows
            continue
        name = s["body"].get("functionName") or s["body"].get("FunctionName") or s["path"]
        slug = "keyed-everything" if "everything" in name else "keyed-time"
        assert {k: v for k, v in env.items() if k != "WEMCP_BRIDGE_PORT"} == expected[slug], s["action"]

    async with httpx2.AsyncClient(timeout=60) as http:
        # ---- the Python entry (FC, mcp-server-time): TZ arrives per call, shown in its tools' schema
        async with _function_behind_trigger(fake.functions["wemcp-keyed-time"], tmp_path) as (mcp, port):
            env_kolkata = {"x-wemcp-env-tz": "Asia/Kolkata"}
            signed = platform_bridge_headers("keyed-time")
            refused = {
                "no credential": {},
                "another slug's credential": platform_bridge_headers("keyed-everything"),
                "the platform key itself, not the slug's": {
                    "x-wemcp-assertion": ring.sign({"iss": "gateway", "aud": "bridge:keyed-time",
                                                    "iat": int(time.time()), "exp": int(time.time()) + 60})},
            }
            for why, headers in refused.items():
                r = await McpCaller(http, mcp, {**headers, **env_kolkata}).initialize()
                assert r.status_code == 401, (why, r.text)
                for method in ("GET", "DELETE"):
                    assert (await http.request(method, mcp, headers=headers)).status_code == 401, (why, method)
            assert await _sessions(port) == 0  # nothing was started for them
            # the platform, with a caller's key: the server runs with it
            kolkata = McpCaller(http, mcp, {**signed, **env_kolkata})
            assert (await kolkata.initialize()).status_code == 200
            lima = McpCaller(http, mcp, {**signed, "X-WeMcp-Env-TZ": "America/Lima"})
            assert (await lima.initialize()).status_code == 200
            for caller, zone in ((kolkata, "Asia/Kolkata"), (lima, "America/Lima"), (kolkata, "Asia/Kolkata")):
                tools = (await caller.request("tools/list"))["result"]["tools"]
                described = json.dumps([t["inputSchema"] for t in tools])
                assert zone in described and "Never/Baked-0001" not in described, zone
            assert await _sessions(port) == 2  # one server per caller
            # a session keeps its caller's key; a name the server does not declare is refused
            r = await kolkata.post({"jsonrpc": "2.0", "id": 50, "method": "tools/list"},
                                   {"x-wemcp-env-tz": "America/Lima"})
            assert r.status_code == 400 and "credentials differ" in r.text
            r = await McpCaller(http, mcp, {**signed, "x-wemcp-env-aws_secret": "x"}).initialize()
            assert r.status_code == 400 and "AWS_SECRET is not a variable this server declares" in r.text

        # ---- the Node.js entry (FC, server-everything): the key in the server's environment, the
        # function's own key not
        async with _function_behind_trigger(fake.functions["wemcp-keyed-everything"], tmp_path) as (mcp, _):
            key = {"X-WeMcp-Env-MAPS_API_KEY": "call-time-key-0001"}
            for headers in ({}, platform_bridge_headers("keyed-time")):
                assert (await McpCaller(http, mcp, {**headers, **key}).initialize()).status_code == 401
            caller = McpCaller(http, mcp, {**platform_bridge_headers("keyed-everything"), **key})
            assert (await caller.initialize()).status_code == 200
            res = await caller.request("tools/call", {"name": "get-env", "arguments": {}})
            seen = json.loads(res["result"]["content"][0]["text"])
            assert seen["MAPS_API_KEY"] == "call-time-key-0001"
            assert not [k for k in seen if k.startswith("WEMCP_BRIDGE_")], "the server can read the function's key"
            assert "baked-would-leak-0001" not in json.dumps(seen)
            r = await caller.post({"jsonrpc": "2.0", "id": 51, "method": "tools/list"},
                                  {"X-WeMcp-Env-MAPS_API_KEY": "someone-else"})
            assert r.status_code == 400
