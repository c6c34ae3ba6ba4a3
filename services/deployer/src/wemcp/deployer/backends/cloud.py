"""Serverless backends through the clouds' official SDKs: Aliyun Function Compute 3.0
(``alibabacloud-fc20230330``, custom runtime, ACS3-HMAC-SHA256) and Tencent SCF
(``tencentcloud-sdk-python-scf``, web function, TC3-HMAC-SHA256).

``plan()`` is side-effect free: the function configuration, ``s.yaml`` and the exact request bodies the
SDK will send (the code zip as a placeholder). ``deploy()`` builds the real code zip
(:mod:`wemcp.deployer.artifacts`) and calls the SDK, only when ``live`` (``WEMCP_DEPLOYER_CLOUD_LIVE=true``)
and credentials are set. ``endpoint`` (``https://host:port``) and ``ca_file`` point the SDKs elsewhere;
the tests use a loopback HTTPS server that recomputes every signature.

A function's HTTP trigger is public, and the function runs code strangers submitted, so it must
neither answer anyone nor hold the platform's keys: its environment carries only the keys derived
for its own slug (``WEMCP_BRIDGE_KEYS``, :meth:`wemcp.common.trust.KeyRing.derive`), with which the
bundled bridge (the function's entry, ``runtime/wemcp_bridge.py|js``) checks the gateway's assertion
on every request before any server code runs, and answers 401 otherwise. Rotating
``WEMCP_SERVICE_KEYS`` therefore means redeploying cloud functions before the old key is dropped.

The server's own keys (API keys of maps, weather ...) are never part of the function: not in its
configuration, not in its code zip. The gateway sends them with every call as ``X-WeMcp-Env-<NAME>``
headers, like to the local bridge; the configuration names which variables a call may set
(``WEMCP_BRIDGE_ENV``, names only) and the bridge starts each session's server with the values its
caller sent. A redeploy rewrites the configuration too (FC: UpdateFunction; SCF:
UpdateFunctionCode, then UpdateFunctionConfiguration), so a rotated key or a changed list of
variables reaches an existing function.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wemcp.common.trust import KeyRing, bridge_audience, environment_ring
from wemcp.deployer.artifacts import TARGETS, ArtifactBuilder, CodeZip
from wemcp.deployer.backends.base import DeployError, Outcome, Plan, Progress, RuntimeStatus, Target
from wemcp.deployer.install import InstallError
from wemcp.deployer.spec import PLACEHOLDER, DeploySpec

BRIDGE_PORT_FC = TARGETS["aliyun-fc"]["port"]
BRIDGE_PORT_SCF = TARGETS["tencent-scf"]["port"]
ZIP_PLACEHOLDER = "<base64 of code.zip>"
KEYS_PLACEHOLDER = "<keys derived for this slug from WEMCP_SERVICE_KEYS>"  # plans show no secret


def accepted_env(spec: DeploySpec) -> list[str]:
    """The variables a call may set on the function (``X-WeMcp-Env-<NAME>``): the declared environment
    variables and the ``{NAME}`` placeholders of the package's arguments. Names only."""
    names = {v.name for v in spec.env_vars()}
    pkg = spec.package
    if pkg is not None:
        for arg in (*pkg.package_arguments, *pkg.runtime_arguments):
            names.update(PLACEHOLDER.findall(arg.value if arg.value is not None else arg.default or ""))
    return sorted(names)


def bridge_env(keys: KeyRing | None, slug: str, accepted: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """The function's configuration for its entry (runtime/wemcp_bridge.py): the keys derived for its
    slug only, and the names of the variables calls may set (never a value). ``keys`` None: a plan,
    which shows a placeholder."""
    audience = bridge_audience(slug)
    env = {"WEMCP_BRIDGE_KEYS": keys.derive(audience).export() if keys is not None else KEYS_PLACEHOLDER,
           "WEMCP_BRIDGE_AUDIENCE": audience}
    if accepted:
        env["WEMCP_BRIDGE_ENV"] = ",".join(accepted)
    return env


@dataclass
class CloudCredentials:
    key_id: str
    secret: str
    account_or_region: str


def _split_endpoint(endpoint: str) -> tuple[str, str]:
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return parts.scheme, parts.netloc


async def _build(builder: ArtifactBuilder | None, target: Target, cloud: str, progress: Progress) -> CodeZip:
    if builder is None:
        raise DeployError(f"{cloud} needs an artifact builder (the deployer's installer) to build the code zip")
    await progress("building", f"code.zip for {cloud}")
    try:
        code = await builder.build(target.spec, cloud)
    except InstallError as exc:
        raise DeployError(str(exc), exc.tail) from None
    await progress("built", f"code.zip {code.path.stat().st_size // 1024} KiB, {len(code.files)} files, "
                   f"version {code.version}")
    return code


class _FunctionBackend:
    """What both clouds' function backends hold: the API endpoint and credentials, whether they call it
    (``live``), the code zip's builder, a CA file for the API, the keys of the bridge's credential."""

    def __init__(self, *, endpoint: str, credentials: CloudCredentials | None, live: bool,
                 builder: ArtifactBuilder | None, ca_file: str | None, keys: KeyRing | None) -> None:
        self.keys = keys if keys is not None else environment_ring()
        self.credentials = credentials
        self.endpoint = endpoint
        self.live = live
        self.builder = builder
        self.ca_file = ca_file


# --------------------------------------------------------------------------------------- Aliyun FC 3.0
class AliyunFcDeployer(_FunctionBackend):
    name = "aliyun-fc"
    version = "2023-03-30"

    def __init__(self, *, account_id: str = "", region: str = "cn-hangzhou",
                 credentials: CloudCredentials | None = None, endpoint: str | None = None, live: bool = False,
                 builder: ArtifactBuilder | None = None, ca_file: str | None = None,
                 keys: KeyRing | None = None) -> None:
        self.account_id, self.region = account_id, region
        super().__init__(endpoint=endpoint or f"https://{account_id}.{region}.fc.aliyuncs.com",
                         credentials=credentials, live=live, builder=builder, ca_file=ca_file, keys=keys)

    def function_name(self, slug: str) -> str:
        return f"wemcp-{slug}".replace(".", "-")[:64]

    # The SDK models are the single source of the request bodies: plan() and deploy() both use them.
    def _function_input(self, target: Target, zip_b64: str, keys: KeyRing | None = None) -> Any:
        from alibabacloud_fc20230330 import models as fc

        return fc.CreateFunctionInput(
            function_name=self.function_name(target.slug), runtime="custom.debian12", handler="index.handler",
            description=f"WeMcp MCP server {target.slug} (stdio bridged to Streamable HTTP)",
            memory_size=512, cpu=0.35, disk_size=512, timeout=300, instance_concurrency=20,
            custom_runtime_config=fc.CustomRuntimeConfig(command=["/code/bootstrap"], port=BRIDGE_PORT_FC),
            internet_access=target.spec.network, session_affinity="MCP_SSE",
            environment_variables={"WEMCP_BRIDGE_PORT": str(BRIDGE_PORT_FC),
                                   **bridge_env(keys, target.slug, accepted_env(target.spec))},
            code=fc.InputCodeLocation(zip_file=zip_b64))

    def _trigger_input(self) -> Any:
        from alibabacloud_fc20230330 import models as fc

        return fc.CreateTriggerInput(trigger_name="http", trigger_type="http", qualifier="LATEST",
                                     trigger_config=json.dumps({"authType": "anonymous",
                                                                "methods": ["GET", "POST", "DELETE"],
                                                                "disableURLInternet": False}))

    def plan(self, target: Target) -> Plan:
        fn = self.function_name(target.slug)
        function = self._function_input(target, ZIP_PLACEHOLDER).to_map()
        trigger = self._trigger_input().to_map()
        props = {k: v for k, v in function.items() if k not in ("code", "functionName")}
        s_yaml = {"edition": "3.0.0", "name": fn, "access": "default", "resources": {fn: {
            "component": "fc3", "props": {
                "region": self.region, "functionName": fn, **props, "code": "./code",
                "triggers": [{**trigger, "triggerConfig": json.loads(trigger["triggerConfig"])}]}}}}
        base = f"/{self.version}/functions"
        return Plan(backend=self.name, slug=target.slug, kind=target.spec.kind,
                    actions=["build code.zip: the package for Debian 12 + wemcp_bridge + bootstrap",
                             f"CreateFunction {fn} (custom.debian12, port {BRIDGE_PORT_FC}; "
                             "UpdateFunction if it exists)",
                             "CreateTrigger http (anonymous to FC: the function's entry answers only requests "
                             "the platform signed for this slug; kept if it exists)"],
                    artifacts={"s.yaml": s_yaml, "code.zip": ["bootstrap", "wemcp_bridge.py | wemcp_bridge.js",
                                                              "python/ | node_modules/", "server_entry.py (PyPI)"]},
                    requests=[{"action": "CreateFunction", "method": "POST", "path": base, "body": function},
                              {"action": "CreateTrigger", "method": "POST", "path": f"{base}/{fn}/triggers",
                               "body": trigger}])

    def client(self) -> Any:
        from alibabacloud_fc20230330.client import Client
        from alibabacloud_tea_openapi import utils_models

        assert self.credentials is not None
        scheme, host = _split_endpoint(self.endpoint)
        return Client(utils_models.Config(access_key_id=self.credentials.key_id,
                                          access_key_secret=self.credentials.secret, region_id=self.region,
                                          endpoint=host, protocol=scheme, ca=self.ca_file,
                                          connect_timeout=10_000, read_timeout=60_000))

    def _live(self) -> None:
        if not (self.live and self.credentials):
            raise DeployError("aliyun-fc deploys need credentials and WEMCP_DEPLOYER_CLOUD_LIVE=true")

    async def deploy(self, target: Target, progress: Progress) -> Outcome:
        from alibabacloud_fc20230330 import models as fc
        from alibabacloud_tea_openapi.exceptions import AlibabaCloudException

        self._live()
        code = await _build(self.builder, target, self.name, progress)
        client, fn = self.client(), self.function_name(target.slug)
        function = self._function_input(target, code.base64(), self.keys)
        try:
            await progress("calling", "CreateFunction")
            try:
                await client.create_function_async(fc.CreateFunctionRequest(body=function))
            except AlibabaCloudException as exc:
                if exc.status_code != 409:  # FunctionAlreadyExists: a redeploy updates it (idempotent)
                    raise
                await progress("calling", "UpdateFunction")
                update = fc.UpdateFunctionInput().from_map({k: v for k, v in function.to_map().items()
                                                             if k != "functionName"})
                await client.update_function_async(fn, fc.UpdateFunctionRequest(body=update))
            await progress("calling", "CreateTrigger")
            url = None
            try:
                res = await client.create_trigger_async(fn, fc.CreateTriggerRequest(body=self._trigger_input()))
                http = res.body.http_trigger if res.body else None
                url = http.url_internet if http else None
            except AlibabaCloudException as exc:
                if exc.status_code != 409:  # TriggerAlreadyExists
                    raise
        except AlibabaCloudException as exc:
            raise DeployError(f"Function Compute refused the deployment: HTTP {exc.status_code} {exc.code}: "
                              f"{(exc.message or '')[:200]}") from None
        url = (url or f"https://{fn}-{self.account_id}.{self.region}.fcapp.run").rstrip("/") + "/mcp"
        return Outcome(endpoint=url, introspect_url=url, package_version=code.version)

    async def status(self, slug: str) -> RuntimeStatus:
        if not (self.live and self.credentials):
            return RuntimeStatus("unknown")
        from alibabacloud_tea_openapi.exceptions import AlibabaCloudException

        try:
            res = await self.client().get_function_async(self.function_name(slug), _fc_get_request())
        except AlibabaCloudException as exc:
            return RuntimeStatus("stopped" if exc.status_code == 404 else "unknown", detail={"error": exc.code})
        state = (res.body.state or "").lower() if res.body else ""
        return RuntimeStatus("running" if state == "active" else state or "unknown", detail={"state": state})

    async def logs(self, slug: str, lines: int = 100) -> str:
        return ""  # FC logs live in SLS (a log project configured per account); not fetched here

    async def scale(self, slug: str, replicas: int) -> None:
        return None  # FC scales per request (to zero when idle)

    async def undeploy(self, slug: str) -> None:
        if not (self.live and self.credentials):
            return
        from alibabacloud_tea_openapi.exceptions import AlibabaCloudException

        client, fn = self.client(), self.function_name(slug)
        for call in (lambda: client.delete_trigger_async(fn, "http"), lambda: client.delete_function_async(fn)):
            try:
                await call()
            except AlibabaCloudException as exc:
                if exc.status_code != 404:
                    raise DeployError(f"Function Compute refused the deletion: {exc.code}") from None


def _fc_get_request() -> Any:
    from alibabacloud_fc20230330 import models as fc

    return fc.GetFunctionRequest()


# --------------------------------------------------------------------------------------- Tencent SCF
class TencentScfDeployer(_FunctionBackend):
    name = "tencent-scf"
    version = "2018-04-16"
    host = "scf.tencentcloudapi.com"

    def __init__(self, *, region: str = "ap-guangzhou", credentials: CloudCredentials | None = None,
                 endpoint: str | None = None, live: bool = False, builder: ArtifactBuilder | None = None,
                 ca_file: str | None = None, poll_interval: float = 2.0, poll_timeout: float = 300.0,
                 keys: KeyRing | None = None) -> None:
        self.region = region
        super().__init__(endpoint=endpoint or f"https://{self.host}", credentials=credentials, live=live,
                         builder=builder, ca_file=ca_file, keys=keys)
        self.poll_interval, self.poll_timeout = poll_interval, poll_timeout

    def function_name(self, slug: str) -> str:
        return f"wemcp-{slug}".replace(".", "-")[:60]

    def _configuration(self, target: Target, keys: KeyRing | None) -> dict[str, Any]:
        """What CreateFunction and UpdateFunctionConfiguration both set: the entry's configuration."""
        env = {"WEMCP_BRIDGE_PORT": str(BRIDGE_PORT_SCF), **bridge_env(keys, target.slug, accepted_env(target.spec))}
        return {"Environment": {"Variables": [{"Key": k, "Value": v} for k, v in env.items()]},
                "PublicNetConfig": {"PublicNetStatus": "ENABLE" if target.spec.network else "DISABLE"}}

    def _create_body(self, target: Target, zip_b64: str, keys: KeyRing | None = None) -> dict[str, Any]:
        from tencentcloud.scf.v20180416 import models

        kind = target.spec.kind
        req = models.CreateFunctionRequest()
        req._deserialize({
            "FunctionName": self.function_name(target.slug), "Type": "HTTP",
            "Runtime": "Nodejs18.15" if kind == "npm" else "Python3.10",
            "Description": f"WeMcp MCP server {target.slug}", "MemorySize": 512, "Timeout": 900,
            "InstallDependency": "FALSE", "Code": {"ZipFile": zip_b64}, **self._configuration(target, keys)})
        return req._serialize()

    def _update_configuration_body(self, target: Target, keys: KeyRing | None = None) -> dict[str, Any]:
        from tencentcloud.scf.v20180416 import models

        req = models.UpdateFunctionConfigurationRequest()
        req._deserialize({"FunctionName": self.function_name(target.slug), **self._configuration(target, keys)})
        return req._serialize()

    def _trigger_body(self, slug: str) -> dict[str, Any]:
        from tencentcloud.scf.v20180416 import models

        req = models.CreateTriggerRequest()
        req._deserialize({"FunctionName": self.function_name(slug), "TriggerName": "mcp", "Type": "apigw",
                          "TriggerDesc": json.dumps({"api": {"authRequired": "FALSE",
                                                             "requestConfig": {"method": "ANY"},
                                                             "isIntegratedResponse": "FALSE"},
                                                     "service": {"serviceName": "wemcp"},
                                                     "release": {"environmentName": "release"}})})
        return req._serialize()

    def plan(self, target: Target) -> Plan:
        fn = self.function_name(target.slug)
        return Plan(backend=self.name, slug=target.slug, kind=target.spec.kind,
                    actions=["build code.zip with an executable scf_bootstrap listening on 9000",
                             f"CreateFunction {fn} (web function; if it exists: UpdateFunctionCode, GetFunction "
                             "until Active, UpdateFunctionConfiguration)",
                             "GetFunction until Active", "CreateTrigger apigw"],
                    artifacts={"code.zip": ["scf_bootstrap", "wemcp_bridge.py | wemcp_bridge.js",
                                            "python/ | node_modules/", "server_entry.py (PyPI)"]},
                    requests=[{"action": "CreateFunction", "body": self._create_body(target, ZIP_PLACEHOLDER)},
                              {"action": "GetFunction", "body": {"FunctionName": fn}},
                              {"action": "CreateTrigger", "body": self._trigger_body(target.slug)}])

    def client(self) -> Any:
        from tencentcloud.common.credential import Credential
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile
        from tencentcloud.scf.v20180416.scf_client import ScfClient

        assert self.credentials is not None
        scheme, host = _split_endpoint(self.endpoint)
        profile = ClientProfile(httpProfile=HttpProfile(protocol=scheme, endpoint=host, reqTimeout=60,
                                                        certification=self.ca_file))
        return ScfClient(Credential(self.credentials.key_id, self.credentials.secret), self.region, profile)

    async def _call(self, client: Any, action: str, body: dict[str, Any]) -> Any:
        from tencentcloud.scf.v20180416 import models

        req = getattr(models, f"{action}Request")()
        req._deserialize(body)
        return await asyncio.to_thread(getattr(client, action), req)  # the SDK client is synchronous (requests)

    async def deploy(self, target: Target, progress: Progress) -> Outcome:
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

        if not (self.live and self.credentials):
            raise DeployError("tencent-scf deploys need credentials and WEMCP_DEPLOYER_CLOUD_LIVE=true")
        code = await _build(self.builder, target, self.name, progress)
        client, fn = self.client(), self.function_name(target.slug)
        try:
            await progress("calling", "CreateFunction")
            try:
                await self._call(client, "CreateFunction", self._create_body(target, code.base64(), self.keys))
            except TencentCloudSDKException as exc:
                if not str(exc.code).startswith("ResourceInUse"):
                    raise
                await progress("calling", "UpdateFunctionCode")
                await self._call(client, "UpdateFunctionCode", {"FunctionName": fn, "ZipFile": code.base64()})
                # the configuration too: the derived keys (rotation) and the variables calls may set
                await self._wait_active(client, fn)
                await progress("calling", "UpdateFunctionConfiguration")
                await self._call(client, "UpdateFunctionConfiguration",
                                 self._update_configuration_body(target, self.keys))
            await progress("calling", "GetFunction")
            await self._wait_active(client, fn)
            await progress("calling", "CreateTrigger")
            url = None
            try:
                res = await self._call(client, "CreateTrigger", self._trigger_body(target.slug))
                url = _apigw_url(getattr(getattr(res, "TriggerInfo", None), "TriggerDesc", None))
            except TencentCloudSDKException as exc:
                if not str(exc.code).startswith("ResourceInUse"):
                    raise
        except TencentCloudSDKException as exc:
            raise DeployError(f"SCF refused the deployment: {exc.code}: {(exc.message or '')[:200]}") from None
        endpoint = (url.rstrip("/") + "/mcp") if url else "(see the API gateway trigger of " + fn + ")"
        return Outcome(endpoint=endpoint, introspect_url=endpoint if url else None, package_version=code.version)

    async def _wait_active(self, client: Any, fn: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_timeout
        while True:
            res = await self._call(client, "GetFunction", {"FunctionName": fn})
            status = getattr(res, "Status", None)
            if status == "Active":
                return
            if status in ("CreateFailed", "UpdateFailed"):
                reasons = getattr(res, "StatusReasons", None) or []
                detail = "; ".join(f"{r.ErrorCode}: {r.ErrorMessage}" for r in reasons)
                raise DeployError(f"SCF could not create {fn}: {status} {detail}".strip())
            if loop.time() > deadline:
                raise DeployError(f"SCF function {fn} still {status} after {self.poll_timeout:g} s")
            await asyncio.sleep(self.poll_interval)

    async def status(self, slug: str) -> RuntimeStatus:
        if not (self.live and self.credentials):
            return RuntimeStatus("unknown")
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

        try:
            res = await self._call(self.client(), "GetFunction", {"FunctionName": self.function_name(slug)})
        except TencentCloudSDKException as exc:
            return RuntimeStatus("stopped" if "NotFound" in str(exc.code) else "unknown",
                                 detail={"error": exc.code})
        return RuntimeStatus("running" if res.Status == "Active" else str(res.Status).lower(),
                             detail={"status": res.Status})

    async def logs(self, slug: str, lines: int = 100) -> str:
        return ""  # SCF logs live in CLS; not fetched here

    async def scale(self, slug: str, replicas: int) -> None:
        return None  # SCF scales per request

    async def undeploy(self, slug: str) -> None:
        if not (self.live and self.credentials):
            return
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

        try:
            await self._call(self.client(), "DeleteFunction", {"FunctionName": self.function_name(slug)})
        except TencentCloudSDKException as exc:
            if "NotFound" not in str(exc.code):
                raise DeployError(f"SCF refused the deletion: {exc.code}") from None


def _apigw_url(desc: str | None) -> str | None:
    try:
        d = json.loads(desc or "")
        sub = d["service"]["subDomain"]
        env = d.get("release", {}).get("environmentName", "release")
        path = d.get("api", {}).get("requestConfig", {}).get("path", "/")
        return f"https://{sub}/{env}{path}".rstrip("/")
    except (ValueError, KeyError, TypeError):
        return None


def credentials_from_env(prefix: str) -> CloudCredentials | None:
    key, secret = os.environ.get(f"{prefix}_KEY_ID"), os.environ.get(f"{prefix}_SECRET")
    return CloudCredentials(key, secret, os.environ.get(f"{prefix}_ACCOUNT", "")) if key and secret else None


def work_dir_for(data_dir: Path) -> Path:
    return data_dir / "cloud-artifacts"
