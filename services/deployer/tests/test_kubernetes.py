"""Kubernetes manifests per server, validated offline against the Kubernetes JSON schemas shipped by
`kubernetes-validate` (strict: unknown fields are errors), for several Kubernetes versions."""

from __future__ import annotations

import copy
import uuid

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from wemcp.common.trust import KeyRing
from wemcp.deployer.backends.base import Target
from wemcp.deployer.backends.kubernetes import NODE_IMAGE, PRIVATE, PYTHON_IMAGE, manifests
from wemcp.deployer.spec import parse_spec

NPM = Target("everything", uuid.UUID(int=7), parse_spec({"packages": [{
    "registryType": "npm", "identifier": "@modelcontextprotocol/server-everything", "version": "2026.8.31"}]}))
PYPI = Target("time", uuid.UUID(int=8), parse_spec({"packages": [{
    "registryType": "pypi", "identifier": "mcp-server-time", "version": "2026.10.19",
    "packageArguments": [{"type": "named", "name": "--local-timezone", "value": "Asia/Shanghai"}]}]}))
NETWORKED = Target("net", uuid.UUID(int=9), parse_spec({"network": True, "packages": [{
    "registryType": "pypi", "identifier": "mcp-server-time", "version": "2026.10.19"}]}))
VERSIONS = ["1.30.0", "1.37.0"]


def _validate_as(obj: dict, schema_file: str, version: str) -> None:
    """Validate a fragment (a PodSpec, an ObjectMeta) against one strict schema file."""
    d = f"kubernetes-json-schema/v{version}-local-strict"
    schema = schema_contents(f"{d}/{schema_file}", version)
    registry = Resource.from_contents(schema_contents(f"{d}/_definitions.json", version)) @ (
        Resource.from_contents(schema) @ Registry())
    jsonschema.validators.Draft202012Validator(schema, registry=registry).validate(obj)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", [NPM, PYPI, NETWORKED], ids=["npm", "pypi", "network"])
def test_every_manifest_validates_against_the_kubernetes_schemas(target: Target, version: str):
    docs = manifests(target)
    kinds = [d["kind"] for d in docs]
    assert kinds == ["ConfigMap", "Deployment", "Service", "NetworkPolicy", "Secret"]
    (egress,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    public = egress["spec"]["egress"][1]
    assert public["to"][0]["ipBlock"]["except"] == PRIVATE  # never private, loopback, metadata, CGNAT
    assert ("ports" not in public) is target.spec.network  # network off: 443 only (the install)
    for doc in docs:
        assert kubernetes_validate.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]
    # Knative Service: not a core kind; its template embeds a PodSpec (plus Knative's own fields)
    cm, kn, *policy, _secret = manifests(target, knative=True)
    assert len(policy) == 1
    kubernetes_validate.validate(cm, version, strict=True)
    _validate_as(kn["metadata"], "objectmeta-meta-v1.json", version)
    _validate_as(kn["spec"]["template"]["metadata"], "objectmeta-meta-v1.json", version)
    pod = {k: v for k, v in kn["spec"]["template"]["spec"].items()
           if k not in ("containerConcurrency", "timeoutSeconds")}
    _validate_as(pod, "podspec-v1.json", version)
    assert kn["spec"]["template"]["spec"]["containerConcurrency"] == 20
    assert [p["name"] for p in pod["containers"][0]["ports"]] == ["http1"]  # Knative: one port, named http1|h2c


def test_the_schemas_catch_mistakes():
    dep = manifests(NPM)[1]
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.37.0", strict=True)
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"  # a typo: strict refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.37.0", strict=True)
    kn_pod = manifests(NPM, knative=True)[1]["spec"]["template"]["spec"]
    with pytest.raises(jsonschema.ValidationError):  # Knative's own fields are not PodSpec fields
        _validate_as(kn_pod, "podspec-v1.json", "1.37.0")


def test_manifests_run_the_package_confined_with_real_images():
    cm, dep, svc, policy, secret = manifests(PYPI)
    pod = dep["spec"]["template"]["spec"]
    init, server = pod["initContainers"][0], pod["containers"][0]
    assert server["image"] == init["image"] == PYTHON_IMAGE and manifests(NPM)[1]["spec"]["template"]["spec"][
        "containers"][0]["image"] == NODE_IMAGE
    assert init["command"][-1] == "mcp-server-time==2026.10.19"
    assert "/bridge/wemcp_bridge.py --port 8080 -- /code/python/bin/mcp-server-time --local-timezone Asia/Shanghai" \
        in server["command"][-1]
    assert set(cm["data"]) == {"wemcp_bridge.js", "wemcp_bridge.py"}
    # the bridge checks the gateway's credential with keys derived for this slug only
    assert server["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert secret["stringData"]["WEMCP_BRIDGE_AUDIENCE"] == f"bridge:{PYPI.slug}"
    ring = KeyRing.parse("k1:0123456789abcdef0123456789")
    derived = manifests(PYPI, keys=ring)[-1]["stringData"]["WEMCP_BRIDGE_KEYS"]
    assert derived == ring.derive(f"bridge:{PYPI.slug}").export() and "0123456789abcdef" not in derived
    # the server's keys come with each call: the Secret names the variables, never a value
    keyed = Target("keyed", uuid.UUID(int=10), parse_spec({"packages": [{
        "registryType": "npm", "identifier": "@baidumap/mcp-server-baidu-map", "version": "1.0.0",
        "environmentVariables": [{"name": "BAIDU_MAP_API_KEY", "isSecret": True, "value": "never-in-a-manifest"}]}]}))
    keyed_secret = manifests(keyed, keys=ring)[-1]["stringData"]
    assert keyed_secret["WEMCP_BRIDGE_ENV"] == "BAIDU_MAP_API_KEY"
    assert "never-in-a-manifest" not in str(manifests(keyed, keys=ring))
    sc = server["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    selector, labels = dep["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"]
    assert set(selector.items()) <= set(labels.items())
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    egress = policy["spec"]["egress"]
    assert "169.254.0.0/16" in egress[1]["to"][0]["ipBlock"]["except"]  # no cloud metadata, no cluster ranges
    with pytest.raises(ValueError, match="image reference"):
        manifests(PYPI, python_image="not an image")
