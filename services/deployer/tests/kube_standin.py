"""A loopback stand-in for the Kubernetes API server: the REST paths the deployer's kubernetes backend
uses (server-side apply, read status, scale, list pods, pod logs, delete), objects kept in memory,
every request recorded (method, path, query, content type, body). It asks for a bearer token, as an
API server does. Pods become ready at once unless ``ready`` is False."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

GROUPS = {"configmaps": "v1", "secrets": "v1", "services": "v1", "pods": "v1",
          "deployments": "apps/v1", "networkpolicies": "networking.k8s.io/v1"}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class KubeStandIn:
    token: str = "standin-token"
    ready: bool = True
    log_text: str = "server started\n"
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (resource, ns, name)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, method: str, resource: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and (resource is None or f"/{resource}/" in r.path)]

    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                  "reason": reason, "message": message}, status=code)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        ctype = request.headers.get("content-type", "")
        body: Any = None
        if raw:
            body = yaml.safe_load(raw) if "yaml" in ctype else json.loads(raw)
        self.requests.append(Recorded(request.method, request.path, dict(request.query), ctype, body))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        parts = request.path.strip("/").split("/")
        # /api/v1/namespaces/<ns>/<resource>[/<name>[/<sub>]] or /apis/<group>/<v>/namespaces/...
        i = parts.index("namespaces")
        ns, resource = parts[i + 1], parts[i + 2]
        name = parts[i + 3] if len(parts) > i + 3 else None
        sub = parts[i + 4] if len(parts) > i + 4 else None
        key = (resource, ns, name or "")
        if request.method == "PATCH" and sub is None:
            if ctype != "application/apply-patch+yaml":
                return self._status(415, "UnsupportedMediaType", f"{ctype} not expected here")
            if body["metadata"]["name"] != name or body["metadata"].get("namespace", ns) != ns:
                return self._status(400, "BadRequest", "name or namespace differ from the path")
            obj = copy.deepcopy(body)
            obj["metadata"]["resourceVersion"] = str(len(self.requests))
            if resource == "deployments":
                want = obj["spec"].get("replicas", 1)
                obj["status"] = {"replicas": want, "readyReplicas": want if self.ready else 0,
                                 "conditions": [] if self.ready else [
                                     {"type": "Progressing", "status": "True", "message": "image pulling"}]}
            self.objects[key] = obj
            return web.json_response(obj)
        if request.method == "PATCH" and sub == "scale":
            obj = self.objects.get(key)
            if obj is None:
                return self._status(404, "NotFound", f"deployments {name} not found")
            obj["spec"]["replicas"] = body["spec"]["replicas"]
            obj["status"]["readyReplicas"] = body["spec"]["replicas"] if self.ready else 0
            return web.json_response({"kind": "Scale", "apiVersion": "autoscaling/v1",
                                      "metadata": {"name": name, "namespace": ns},
                                      "spec": {"replicas": obj["spec"]["replicas"]}})
        if request.method == "GET" and resource == "pods" and name is None:
            sel = request.query.get("labelSelector", "")
            k, _, v = sel.partition("=")
            items = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{o['metadata']['name']}-0",
                                                                        "namespace": ns}}
                     for (r, n, _), o in self.objects.items()
                     if r == "deployments" and n == ns and o["metadata"]["labels"].get(k) == v
                     and o["status"]["readyReplicas"]]
            return web.json_response({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
        if request.method == "GET" and resource == "pods" and sub == "log":
            return web.Response(text=self.log_text)
        if request.method == "GET":
            obj = self.objects.get(key)
            if obj is None:
                return self._status(404, "NotFound", f"{resource} {name} not found")
            return web.json_response(obj)
        if request.method == "DELETE":
            obj = self.objects.pop(key, None)
            if obj is None:
                return self._status(404, "NotFound", f"{resource} {name} not found")
            return web.json_response(obj)  # as the API server does for most kinds: the object being deleted
        return self._status(405, "MethodNotAllowed", request.method)
