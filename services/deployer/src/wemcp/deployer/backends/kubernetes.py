"""Kubernetes per server: a Deployment + Service (or a Knative Service that scales to zero), a
ConfigMap with the stdio→HTTP bridge, a Secret with the slug's bridge keys and NetworkPolicies
(:func:`manifests`), and :class:`KubernetesDeployer`, the ``kubernetes`` backend, which applies them
through the official Kubernetes client (server-side apply) against the API server, waits for the pod
to be ready and answers status, logs, scale and undeploy. Validated offline against the Kubernetes
JSON schemas in the tests, and deployed against a loopback API-server stand-in that records requests.

The local backend's sandbox, expressed for a pod: non-root (65534), read-only root, no privilege
escalation, every capability dropped, RuntimeDefault seccomp, no service-account token, no service
links, CPU/memory/disk limits; and as NetworkPolicies: only the platform's gateway and deployer pods
reach the server's port (ingress), and its egress is DNS plus public addresses only (never private,
loopback, link-local/cloud metadata or CGNAT ranges): TCP 443 for the install when ``network`` is off,
any port when it is on.

Images are real, pullable runtime images (settings ``KUBERNETES_NODE_IMAGE`` / ``KUBERNETES_PYTHON_IMAGE``):
an init container installs the pinned package into an ``emptyDir`` (``npm install`` / ``pip install
--target``), the server container runs the bridge from the ConfigMap around it, read-only root, non-root,
all capabilities dropped. The bridge answers only the gateway: a Secret holds the keys derived for this
slug (never the platform's own, see backends/cloud.py) and the server container reads them, with the
names of the variables calls may set (``WEMCP_BRIDGE_ENV``); their values come with each call.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from typing import Any

from wemcp.common.trust import KeyRing
from wemcp.deployer.artifacts import RUNTIME_DIR
from wemcp.deployer.backends.base import DeployError, Outcome, Plan, Progress, RuntimeStatus, Target
from wemcp.deployer.backends.cloud import accepted_env, bridge_env
from wemcp.deployer.spec import base_env, package_argv

NODE_IMAGE = "docker.io/library/node:20-bookworm-slim"
PYTHON_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
# registry/name[:tag][@sha256:digest] (the distribution reference grammar, simplified)
IMAGE_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+"
                      r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
# private, loopback, link-local (cloud metadata) and CGNAT ranges stay unreachable with network off
PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10", "127.0.0.0/8"]


def _name(slug: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"mcp-{slug}".lower())[:63].rstrip("-")


def _pod(target: Target, name: str, image: str, *, knative: bool) -> dict[str, Any]:
    pkg = target.spec.package
    if pkg is None or not pkg.version:
        raise ValueError("kubernetes manifests host npm and PyPI packages at a pinned version")
    args = package_argv(pkg, base_env(target.spec))
    if pkg.registry_type == "npm":
        install = ["npm", "install", "--prefix", "/code", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund",
                   f"{pkg.identifier}@{pkg.version}"]
        run = (f"exec node /bridge/wemcp_bridge.js --port 8080 -- npx --no-install --prefix /code "
               f"{shlex.quote(pkg.identifier)} {shlex.join(args)}")
        env = [{"name": "npm_config_cache", "value": "/tmp/npm"}, {"name": "HOME", "value": "/tmp"}]  # noqa: S108
    else:
        install = ["pip", "install", "--no-cache-dir", "--target", "/code/python", f"{pkg.identifier}=={pkg.version}"]
        script = pkg.identifier.lower()
        run = (f"exec python3 /bridge/wemcp_bridge.py --port 8080 -- /code/python/bin/{shlex.quote(script)} "
               f"{shlex.join(args)}")
        env = [{"name": "PYTHONPATH", "value": "/code/python"}, {"name": "HOME", "value": "/tmp"}]  # noqa: S108
    security = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}}
    mounts = [{"name": "code", "mountPath": "/code"}, {"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    server: dict[str, Any] = {
        "name": "server", "image": image, "command": ["/bin/sh", "-c", run.strip()], "env": env,
        "envFrom": [{"secretRef": {"name": f"{name}-bridge-keys"[:63]}}],
        "ports": [{"containerPort": 8080, "name": "http1" if knative else "http", "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": security,
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
        "volumeMounts": [*mounts, {"name": "bridge", "mountPath": "/bridge", "readOnly": True}]}
    return {
        "initContainers": [{"name": "install", "image": image, "command": install, "env": env,
                            "securityContext": security, "volumeMounts": mounts,
                            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
        "containers": [server],
        "volumes": [{"name": "code", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    {"name": "bridge", "configMap": {"name": f"{name}-bridge"[:63]}}],
        "automountServiceAccountToken": False, "enableServiceLinks": False,
    }


def manifests(target: Target, *, namespace: str = "wemcp-servers", knative: bool = False,
              node_image: str = NODE_IMAGE, python_image: str = PYTHON_IMAGE,
              keys: KeyRing | None = None, platform_namespace: str | None = None) -> list[dict[str, Any]]:
    """``keys``: the platform's ring, from which this slug's bridge keys are derived (None: a
    placeholder the operator fills, as in a plan). ``platform_namespace``: where the gateway and the
    deployer run; given, an ingress NetworkPolicy lets only their pods reach the server."""
    spec = target.spec
    image = node_image if spec.package is not None and spec.package.registry_type == "npm" else python_image
    if not IMAGE_RE.match(image):
        raise ValueError(f"not an image reference: {image!r}")
    name = _name(target.slug)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "wemcp",
              "wemcp.io/server-id": str(target.server_id)}
    pod = _pod(target, name, image, knative=knative)
    bridge = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": f"{name}-bridge"[:63], "namespace": namespace, "labels": labels},
              "data": {f: (RUNTIME_DIR / f).read_text() for f in ("wemcp_bridge.js", "wemcp_bridge.py")}}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": f"{name}-bridge-keys"[:63], "namespace": namespace, "labels": labels},
              "stringData": bridge_env(keys, target.slug, accepted_env(spec))}
    out: list[dict[str, Any]] = [bridge]
    if knative:
        out.append({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    "spec": {"template": {"metadata": {"labels": labels, "annotations": {
                        "autoscaling.knative.dev/min-scale": "0", "autoscaling.knative.dev/max-scale": "5"}},
                        "spec": {**pod, "containerConcurrency": 20, "timeoutSeconds": 300}}}})
    else:
        out += [
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": name, "namespace": namespace, "labels": labels},
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                      "template": {"metadata": {"labels": labels}, "spec": pod}}},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": name, "namespace": namespace, "labels": labels},
             "spec": {"selector": {"app.kubernetes.io/name": name},
                      "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
                      "sessionAffinity": "ClientIP"}},
        ]
    public: dict[str, Any] = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE}}]}
    if not spec.network:
        # Egress only for the install (DNS + HTTPS to public registries); never into private ranges.
        public["ports"] = [{"protocol": "TCP", "port": 443}]
    out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": f"{name}-egress"[:63], "namespace": namespace, "labels": labels},
                "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                         "policyTypes": ["Egress"],
                         "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                                    public]}})
    if platform_namespace is not None:
        # only the platform's gateway (calls) and deployer (introspection) reach the server's port
        peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": platform_namespace}},
                  "podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In",
                                                        "values": ["gateway", "deployer"]}]}}]
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"{name}-ingress"[:63], "namespace": namespace, "labels": labels},
                    "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                             "policyTypes": ["Ingress"],
                             "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": 8080}]}]}})
    out.append(secret)
    return out


# -- the kubernetes backend: the manifests applied through the official client -------------------------
FIELD_MANAGER = "wemcp-deployer"
APPLY = "application/apply-patch+yaml"  # server-side apply: create or update in one idempotent call
# the order objects are applied in: the policies exist before any pod of the server does
ORDER = ["ConfigMap", "Secret", "NetworkPolicy", "Deployment", "Service"]


class KubernetesDeployer:
    """Deploys a hosted server as pods through the Kubernetes API (the official ``kubernetes`` client,
    its blocking calls run in a worker thread). ``api``: a configured ``kubernetes.client.ApiClient``
    (None: in-cluster configuration, else the kubeconfig), so tests point it at a loopback stand-in."""

    name = "kubernetes"

    def __init__(self, *, namespace: str = "wemcp-servers", platform_namespace: str | None = "wemcp",
                 node_image: str = NODE_IMAGE, python_image: str = PYTHON_IMAGE, keys: KeyRing | None = None,
                 api: Any = None, ready_timeout: float = 300.0, poll_seconds: float = 1.0,
                 cluster_domain: str = "cluster.local") -> None:
        self.namespace, self.platform_namespace = namespace, platform_namespace
        self.node_image, self.python_image = node_image, python_image
        self.keys = keys
        self._api = api
        self.ready_timeout, self.poll_seconds = ready_timeout, poll_seconds
        self.cluster_domain = cluster_domain

    @classmethod
    def from_settings(cls, settings: Any, api: Any = None) -> KubernetesDeployer:
        return cls(namespace=settings.kubernetes_namespace, platform_namespace=settings.kubernetes_platform_namespace,
                   node_image=settings.kubernetes_node_image, python_image=settings.kubernetes_python_image,
                   keys=settings.key_ring, api=api, ready_timeout=settings.kubernetes_ready_timeout_seconds,
                   cluster_domain=settings.kubernetes_cluster_domain)

    # -- the client -----------------------------------------------------------------------------
    def api(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config()
                except (config.ConfigException, OSError) as exc:
                    raise DeployError("the kubernetes backend has no cluster: neither in a pod nor a kubeconfig "
                                      f"({_first(exc)})") from None
            self._api = client.ApiClient()
        return self._api

    def _apis(self) -> tuple[Any, Any, Any]:
        from kubernetes import client

        api = self.api()
        return client.CoreV1Api(api), client.AppsV1Api(api), client.NetworkingV1Api(api)

    def _objects(self, target: Target, keys: KeyRing | None) -> list[dict[str, Any]]:
        docs = manifests(target, namespace=self.namespace, node_image=self.node_image,
                         python_image=self.python_image, keys=keys, platform_namespace=self.platform_namespace)
        return sorted(docs, key=lambda d: ORDER.index(d["kind"]))

    def endpoint(self, slug: str) -> str:
        return f"http://{_name(slug)}.{self.namespace}.svc.{self.cluster_domain}/mcp"

    # -- the interface ----------------------------------------------------------------------------
    def plan(self, target: Target) -> Plan:
        docs = self._objects(target, None)
        return Plan(backend=self.name, slug=target.slug, kind=target.spec.kind,
                    actions=[f"apply {d['kind']} {self.namespace}/{d['metadata']['name']}" for d in docs]
                    + [f"wait for the Deployment {_name(target.slug)} to be ready"],
                    artifacts={"manifests": docs},
                    requests=[{"action": "apply", "method": "PATCH", "content_type": APPLY,
                               "kind": d["kind"], "name": d["metadata"]["name"]} for d in docs])

    async def deploy(self, target: Target, progress: Progress) -> Outcome:
        from kubernetes.client.exceptions import ApiException

        docs = self._objects(target, self.keys)
        name = _name(target.slug)
        try:
            for doc in docs:
                await progress("calling", f"apply {doc['kind']} {doc['metadata']['name']}")
                await asyncio.to_thread(self._apply, doc)
            await progress("waiting", f"Deployment {name} ready")
            await self._wait_ready(name)
        except ApiException as exc:
            raise DeployError(f"the Kubernetes API refused the deployment: HTTP {exc.status} {exc.reason}: "
                              f"{_message(exc)}") from None
        pkg = target.spec.package
        url = self.endpoint(target.slug)
        return Outcome(endpoint=url, introspect_url=url, package_version=pkg.version if pkg else None)

    def _apply(self, doc: dict[str, Any]) -> None:
        core, apps, net = self._apis()
        fn = {"ConfigMap": core.patch_namespaced_config_map, "Secret": core.patch_namespaced_secret,
              "Service": core.patch_namespaced_service, "Deployment": apps.patch_namespaced_deployment,
              "NetworkPolicy": net.patch_namespaced_network_policy}[doc["kind"]]
        fn(doc["metadata"]["name"], self.namespace, doc, field_manager=FIELD_MANAGER, force=True,
           _content_type=APPLY)

    async def _wait_ready(self, name: str) -> None:
        _, apps, _ = self._apis()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        while True:
            dep = await asyncio.to_thread(apps.read_namespaced_deployment_status, name, self.namespace,
                                          _preload_content=False)
            st = json.loads(dep.data).get("status") or {}
            if (st.get("readyReplicas") or 0) >= 1:
                return
            if loop.time() >= deadline:
                why = "; ".join(f"{c.get('type')}: {c.get('message', '')}" for c in st.get("conditions") or [])
                raise DeployError(f"the server's pod was not ready within {self.ready_timeout:g} s"
                                  + (f" ({why[:300]})" if why else ""))
            await asyncio.sleep(self.poll_seconds)

    async def status(self, slug: str) -> RuntimeStatus:
        from kubernetes.client.exceptions import ApiException

        _, apps, _ = self._apis()
        try:
            dep = await asyncio.to_thread(apps.read_namespaced_deployment_status, _name(slug), self.namespace,
                                          _preload_content=False)
        except ApiException as exc:
            return RuntimeStatus("stopped" if exc.status == 404 else "unknown", detail={"error": exc.status})
        body = json.loads(dep.data)
        want = (body.get("spec") or {}).get("replicas", 0)
        ready = (body.get("status") or {}).get("readyReplicas") or 0
        state = "idle" if want == 0 else "running" if ready else "unknown"
        return RuntimeStatus(state, replicas=ready, detail={"desired": want})

    async def logs(self, slug: str, lines: int = 100) -> str:
        from kubernetes.client.exceptions import ApiException

        from wemcp.deployer.child import redact

        core, _, _ = self._apis()
        try:
            pods = await asyncio.to_thread(core.list_namespaced_pod, self.namespace,
                                           label_selector=f"app.kubernetes.io/name={_name(slug)}",
                                           _preload_content=False)
            out = []
            for pod in json.loads(pods.data).get("items", [])[:4]:
                text = await asyncio.to_thread(core.read_namespaced_pod_log, pod["metadata"]["name"],
                                               self.namespace, container="server", tail_lines=lines,
                                               _preload_content=False)
                out.append(text.data.decode("utf-8", "replace"))
        except ApiException as exc:
            return f"(no logs: HTTP {exc.status})"
        secrets = list(bridge_env(self.keys, slug).values()) if self.keys is not None else []
        return redact("".join(out), secrets)

    async def scale(self, slug: str, replicas: int) -> None:
        _, apps, _ = self._apis()
        await asyncio.to_thread(apps.patch_namespaced_deployment_scale, _name(slug), self.namespace,
                                {"spec": {"replicas": replicas}})

    async def undeploy(self, slug: str) -> None:
        """Removes every object of the slug; those already gone are fine (idempotent)."""
        from kubernetes.client.exceptions import ApiException

        core, apps, net = self._apis()
        name = _name(slug)
        calls = [(apps.delete_namespaced_deployment, name), (core.delete_namespaced_service, name),
                 (net.delete_namespaced_network_policy, f"{name}-egress"[:63]),
                 (net.delete_namespaced_network_policy, f"{name}-ingress"[:63]),
                 (core.delete_namespaced_secret, f"{name}-bridge-keys"[:63]),
                 (core.delete_namespaced_config_map, f"{name}-bridge"[:63])]
        for fn, obj in calls:
            try:
                await asyncio.to_thread(fn, obj, self.namespace, propagation_policy="Foreground",
                                        _preload_content=False)
            except ApiException as exc:
                if exc.status != 404:
                    raise DeployError(f"the Kubernetes API refused the deletion of {obj}: HTTP {exc.status}") from None


def _first(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message", ""))[:300]
    except (TypeError, ValueError, AttributeError):
        return str(exc.body or "")[:300]
