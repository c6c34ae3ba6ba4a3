"""Serverless backends: Aliyun Function Compute 3.0 (custom runtime) and Tencent SCF (web function).

``plan()`` builds everything without side effects: the code artifact's layout (the package is
installed into the zip by the same installer the local backend uses, plus a small stdio→HTTP bridge
started by the runtime), ``s.yaml`` / the function configuration, and the exact signed API requests.
``deploy()`` sends them only when ``WEMCP_DEPLOYER_CLOUD_LIVE=true`` and credentials are set; tests
point ``endpoint`` at a loopback server that checks method, path, body and signature.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx2
from wemcp.deployer.backends.base import DeployError, Outcome, Plan, Progress, RuntimeStatus, Target
from wemcp.deployer.signing import acs3_sign, tc3_sign
from wemcp.deployer.spec import DeploySpec

BRIDGE_PORT_FC = 8080
BRIDGE_PORT_SCF = 9000


def _start_command(spec: DeploySpec, port: int) -> str:
    """The shell line the function runtime executes: the bundled bridge wrapping the stdio server."""
    pkg = spec.package
    if pkg is not None and pkg.registry_type == "npm":
        inner = f"node /code/node_modules/{pkg.identifier}/$(node -p \"require('{pkg.identifier}/package.json').bin\")"
    elif pkg is not None:
        inner = f"/code/venv/bin/{pkg.identifier}"
    else:
        m = spec.archive.manifest if spec.archive else None
        inner = " ".join([m.command, *m.args]) if m else "false"
    return f"exec /code/bridge --port {port} -- {inner}"


@dataclass
class CloudCredentials:
    key_id: str
    secret: str
    account_or_region: str


class AliyunFcDeployer:
    name = "aliyun-fc"
    version = "2023-03-30"

    def __init__(self, *, account_id: str = "", region: str = "cn-hangzhou", credentials: CloudCredentials | None = None,
                 endpoint: str | None = None, live: bool = False) -> None:
        self.account_id, self.region = account_id, region
        self.credentials = credentials
        self.endpoint = endpoint or f"https://{account_id}.{region}.fc.aliyuncs.com"
        self.live = live

    def function_name(self, slug: str) -> str:
        return f"wemcp-{slug}"[:64]

    def plan(self, target: Target) -> Plan:
        fn = self.function_name(target.slug)
        function = {
            "functionName": fn, "runtime": "custom.debian12", "handler": "index.handler",
            "memorySize": 512, "cpu": 0.35, "diskSize": 512, "timeout": 300, "instanceConcurrency": 20,
            "customRuntimeConfig": {"command": ["/bin/sh", "-c"],
                                    "args": [_start_command(target.spec, BRIDGE_PORT_FC)], "port": BRIDGE_PORT_FC},
            "internetAccess": target.spec.network,
            "code": {"zipFile": "<base64 of code.zip>"},
        }
        trigger = {"triggerName": "http", "triggerType": "http", "qualifier": "LATEST",
                   "triggerConfig": json.dumps({"authType": "anonymous", "methods": ["GET", "POST", "DELETE"],
                                                "disableURLInternet": False})}
        s_yaml = {"edition": "3.0.0", "name": fn, "access": "default", "resources": {fn: {
            "component": "fc3", "props": {"region": self.region, **{k: v for k, v in function.items() if k != "code"},
                                          "code": "./code", "triggers": [{**trigger,
                                                                          "triggerConfig": json.loads(trigger["triggerConfig"])}],
                                          "sessionAffinity": "MCP_SSE"}}}}
        requests = [self._request("CreateFunction", "POST", "/2023-03-30/functions", function),
                    self._request("CreateTrigger", "POST", f"/2023-03-30/functions/{fn}/triggers", trigger)]
        return Plan(backend=self.name, slug=target.slug, kind=target.spec.kind,
                    actions=["build code.zip: the package installed under /code plus the bridge",
                             f"CreateFunction {fn} (custom.debian12, port {BRIDGE_PORT_FC})", "CreateTrigger http"],
                    artifacts={"s.yaml": s_yaml, "code.zip": ["bridge", "node_modules/ | venv/", "bootstrap"]},
                    requests=requests)

    def _request(self, action: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"action": action, "method": method, "path": path,
                "headers": {"x-acs-action": action, "x-acs-version": self.version,
                            "content-type": "application/json"}, "body": body}

    def signed(self, req: dict[str, Any], *, now: str | None = None, nonce: str | None = None) -> tuple[dict[str, str], bytes]:
        assert self.credentials is not None
        body = json.dumps(req["body"], separators=(",", ":"), sort_keys=True).encode()
        host = self.endpoint.split("://", 1)[1].split("/")[0]
        headers = {**req["headers"], "host": host,
                   "x-acs-date": now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "x-acs-signature-nonce": nonce or uuid.uuid4().hex}
        return acs3_sign(method=req["method"], path=req["path"], query={}, headers=headers, body=body,
                         access_key_id=self.credentials.key_id, access_key_secret=self.credentials.secret), body

    async def send(self, req: dict[str, Any]) -> httpx2.Response:
        headers, body = self.signed(req)
        async with httpx2.AsyncClient(timeout=30) as http:
            return await http.request(req["method"], self.endpoint + req["path"], content=body,
                                      headers={k: v for k, v in headers.items() if k != "host"})

    async def deploy(self, target: Target, progress: Progress) -> Outcome:
        if not (self.live and self.credentials):
            raise DeployError("aliyun-fc deploys need credentials and WEMCP_DEPLOYER_CLOUD_LIVE=true")
        for req in self.plan(target).requests:
            await progress("calling", req["action"])
            r = await self.send(req)
            if r.status_code >= 300 and r.status_code != 409:  # 409: exists already (idempotent)
                raise DeployError(f"Function Compute refused {req['action']}: HTTP {r.status_code} {r.text[:200]}")
        fn = self.function_name(target.slug)
        url = f"https://{fn}-{self.account_id}.{self.region}.fcapp.run/mcp"
        return Outcome(endpoint=url, introspect_url=url)

    async def status(self, slug: str) -> RuntimeStatus:
        return RuntimeStatus("unknown")

    async def logs(self, slug: str, lines: int = 100) -> str:
        return ""

    async def scale(self, slug: str, replicas: int) -> None:
        return None

    async def undeploy(self, slug: str) -> None:
        if self.live and self.credentials:
            await self.send(self._request("DeleteFunction", "DELETE",
                                          f"/2023-03-30/functions/{self.function_name(slug)}", {}))


class TencentScfDeployer:
    name = "tencent-scf"
    version = "2018-04-16"
    host = "scf.tencentcloudapi.com"

    def __init__(self, *, region: str = "ap-guangzhou", credentials: CloudCredentials | None = None,
                 endpoint: str | None = None, live: bool = False) -> None:
        self.region = region
        self.credentials = credentials
        self.endpoint = endpoint or f"https://{self.host}"
        self.live = live

    def function_name(self, slug: str) -> str:
        return f"wemcp-{slug}".replace(".", "-")[:60]

    def plan(self, target: Target) -> Plan:
        fn = self.function_name(target.slug)
        bootstrap = "#!/bin/bash\n" + _start_command(target.spec, BRIDGE_PORT_SCF) + "\n"
        create = {"FunctionName": fn, "Type": "HTTP", "Runtime": "CustomRuntime" if not target.spec.package
                  else ("Nodejs18.15" if target.spec.kind == "npm" else "Python3.10"),
                  "MemorySize": 512, "Timeout": 900, "InstallDependency": "FALSE",
                  "Code": {"ZipFile": "<base64 of code.zip>"}, "ProtocolType": "WS" if False else None,
                  "Environment": {"Variables": []}, "PublicNetConfig": {"PublicNetStatus":
                                                                        "ENABLE" if target.spec.network else "DISABLE"}}
        create = {k: v for k, v in create.items() if v is not None}
        trigger = {"FunctionName": fn, "TriggerName": "mcp", "Type": "apigw",
                   "TriggerDesc": json.dumps({"api": {"authRequired": "FALSE", "requestConfig": {"method": "ANY"},
                                                      "isIntegratedResponse": "FALSE"},
                                              "service": {"serviceName": "wemcp"}, "release": {"environmentName": "release"}})}
        return Plan(backend=self.name, slug=target.slug, kind=target.spec.kind,
                    actions=["build code.zip with an executable scf_bootstrap listening on 9000",
                             f"CreateFunction {fn} (web function)", "CreateTrigger"],
                    artifacts={"scf_bootstrap": bootstrap},
                    requests=[{"action": "CreateFunction", "body": create},
                              {"action": "CreateTrigger", "body": trigger}])

    def signed(self, req: dict[str, Any], *, timestamp: int | None = None) -> tuple[dict[str, str], bytes]:
        assert self.credentials is not None
        body = json.dumps(req["body"], separators=(",", ":"), sort_keys=True).encode()
        ts = timestamp or int(time.time())
        sig = tc3_sign(service="scf", host=self.host, action=req["action"], payload=body, timestamp=ts,
                       secret_id=self.credentials.key_id, secret_key=self.credentials.secret)
        return {"Authorization": sig["authorization"], "Content-Type": "application/json; charset=utf-8",
                "Host": self.host, "X-TC-Action": req["action"], "X-TC-Timestamp": str(ts),
                "X-TC-Version": self.version, "X-TC-Region": self.region}, body

    async def send(self, req: dict[str, Any]) -> httpx2.Response:
        headers, body = self.signed(req)
        async with httpx2.AsyncClient(timeout=30) as http:
            return await http.post(self.endpoint + "/", content=body, headers=headers)

    async def deploy(self, target: Target, progress: Progress) -> Outcome:
        if not (self.live and self.credentials):
            raise DeployError("tencent-scf deploys need credentials and WEMCP_DEPLOYER_CLOUD_LIVE=true")
        for req in self.plan(target).requests:
            await progress("calling", req["action"])
            r = await self.send(req)
            err = r.json().get("Response", {}).get("Error") if r.status_code == 200 else {"Message": r.text[:200]}
            if err and "InUse" not in str(err.get("Code", "")):
                raise DeployError(f"SCF refused {req['action']}: {err.get('Code')} {err.get('Message')}")
        return Outcome(endpoint="(see the API gateway trigger URL)")

    async def status(self, slug: str) -> RuntimeStatus:
        return RuntimeStatus("unknown")

    async def logs(self, slug: str, lines: int = 100) -> str:
        return ""

    async def scale(self, slug: str, replicas: int) -> None:
        return None

    async def undeploy(self, slug: str) -> None:
        if self.live and self.credentials:
            await self.send({"action": "DeleteFunction", "body": {"FunctionName": self.function_name(slug)}})


def credentials_from_env(prefix: str) -> CloudCredentials | None:
    key, secret = os.environ.get(f"{prefix}_KEY_ID"), os.environ.get(f"{prefix}_SECRET")
    return CloudCredentials(key, secret, os.environ.get(f"{prefix}_ACCOUNT", "")) if key and secret else None
