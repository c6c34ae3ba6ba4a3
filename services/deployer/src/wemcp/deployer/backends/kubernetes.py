"""Kubernetes manifests per server: a Deployment + Service (or a Knative Service that scales to zero),
a ConfigMap with the stdio→HTTP bridge, and a NetworkPolicy. Generated only; applying them is the
operator's choice. Validated offline against the Kubernetes JSON schemas in the tests.

Images are real, pullable runtime images (settings ``KUBERNETES_NODE_IMAGE`` / ``KUBERNETES_PYTHON_IMAGE``):
an init container installs the pinned package into an ``emptyDir`` (``npm install`` / ``pip install
--target``), the server container runs the bridge from the ConfigMap around it, read-only root, non-root,
all capabilities dropped. The bridge answers only the gateway: a Secret holds the keys derived for this
slug (never the platform's own, see backends/cloud.py) and the server container reads them, with the
names of the variables calls may set (``WEMCP_BRIDGE_ENV``); their values come with each call.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from wemcp.common.trust import KeyRing
from wemcp.deployer.artifacts import RUNTIME_DIR
from wemcp.deployer.backends.base import Target
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
              keys: KeyRing | None = None) -> list[dict[str, Any]]:
    """``keys``: the platform's ring, from which this slug's bridge keys are derived (None: a
    placeholder the operator fills, as in a plan)."""
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
    if not spec.network:
        # Egress only for the install (DNS + HTTPS to public registries); never into private ranges.
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"{name}-egress"[:63], "namespace": namespace, "labels": labels},
                    "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                             "policyTypes": ["Egress"],
                             "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                                        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE}}],
                                         "ports": [{"protocol": "TCP", "port": 443}]}]}})
    out.append(secret)
    return out
