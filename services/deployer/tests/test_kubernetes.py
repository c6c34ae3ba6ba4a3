"""Kubernetes manifests per server."""

from __future__ import annotations

import uuid

from wemcp.deployer.backends.base import Target
from wemcp.deployer.backends.kubernetes import manifests
from wemcp.deployer.spec import parse_spec

SPEC = parse_spec({"packages": [{"registryType": "npm", "identifier": "@modelcontextprotocol/server-everything",
                                 "version": "2026.8.31"}]})
TARGET = Target("everything", uuid.UUID(int=7), SPEC)


def test_kubernetes_manifests():
    docs = manifests(TARGET)
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "NetworkPolicy"]
    dep = docs[0]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert set(dep["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert docs[1]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    kn = manifests(TARGET, knative=True)[0]
    assert kn["apiVersion"] == "serving.knative.dev/v1"
    assert kn["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    assert all(len(d["metadata"]["name"]) <= 63 for d in docs)
