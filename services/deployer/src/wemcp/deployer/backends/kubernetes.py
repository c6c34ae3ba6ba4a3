"""Kubernetes manifests per server: a Deployment + Service (the bridge image runs the package), or a
Knative Service that scales to zero. Generated only; applying them is the operator's choice."""

from __future__ import annotations

from typing import Any

from wemcp.deployer.backends.base import Target

IMAGE = "ghcr.io/wemcp/bridge-runtime:0.1"


def _container(target: Target) -> dict[str, Any]:
    spec = target.spec
    pkg = spec.package
    ref = f"{pkg.registry_type}:{pkg.identifier}@{pkg.version}" if pkg else "archive"
    return {"name": "server", "image": IMAGE, "args": ["--port", "8080", "--package", ref],
            "ports": [{"containerPort": 8080, "name": "http"}],
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}


def manifests(target: Target, *, namespace: str = "wemcp-servers", knative: bool = False) -> list[dict[str, Any]]:
    name = f"mcp-{target.slug}".replace(".", "-").replace("_", "-").lower()[:63]
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "wemcp",
              "wemcp.io/server-id": str(target.server_id)}
    pod = {"containers": [_container(target)], "volumes": [{"name": "tmp", "emptyDir": {}}],
           "automountServiceAccountToken": False}
    if knative:
        return [{"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                 "metadata": {"name": name, "namespace": namespace, "labels": labels},
                 "spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "0"}},
                                       "spec": pod}}}]
    out: list[dict[str, Any]] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace,
                                                                     "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                  "template": {"metadata": {"labels": labels}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "spec": {"selector": {"app.kubernetes.io/name": name},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                  "sessionAffinity": "ClientIP"}},
    ]
    if not target.spec.network:
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"{name}-no-egress", "namespace": namespace},
                    "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                             "policyTypes": ["Egress"], "egress": []}})
    return out
