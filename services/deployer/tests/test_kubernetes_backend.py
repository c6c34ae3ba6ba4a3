"""The kubernetes backend deploys through the official Kubernetes client against a loopback API-server
stand-in (kube_standin.py) that records every request: server-side apply of each object in order
(policies before pods), the bodies valid against the strict Kubernetes schemas, the local backend's
sandbox expressed as pod security and NetworkPolicies, readiness awaited, and status, logs (redacted),
scale and undeploy on the same API."""

from __future__ import annotations

import uuid

import kubernetes_validate
import pytest
from kubernetes import client

from wemcp.common.trust import KeyRing
from wemcp.deployer.backends.base import DeployError, Target
from wemcp.deployer.backends.cloud import bridge_env
from wemcp.deployer.backends.kubernetes import PRIVATE, KubernetesDeployer
from wemcp.deployer.spec import parse_spec

from .kube_standin import KubeStandIn

RING = KeyRing.parse("k1:" + "Q" * 43 + "=")
TIME = Target("time", uuid.UUID(int=8), parse_spec({"packages": [{
    "registryType": "pypi", "identifier": "mcp-server-time", "version": "2026.10.19"}]}))
NET = Target("fetcher", uuid.UUID(int=9), parse_spec({"network": True, "packages": [{
    "registryType": "npm", "identifier": "@acme/fetch-mcp", "version": "1.2.3"}]}))


async def _noop(step: str, detail: str | None) -> None:
    return None


@pytest.fixture
async def kube():
    s = KubeStandIn()
    await s.start()
    yield s
    await s.stop()


def backend(kube: KubeStandIn, token: str | None = None, **kw) -> KubernetesDeployer:
    conf = client.Configuration(host=kube.url)
    conf.api_key = {"authorization": token or kube.token}
    conf.api_key_prefix = {"authorization": "Bearer"}
    return KubernetesDeployer(namespace="servers", platform_namespace="wemcp", keys=RING,
                              api=client.ApiClient(conf), poll_seconds=0.05, **kw)


async def test_deploy_applies_every_object_server_side_in_order(kube: KubeStandIn):
    steps: list[tuple[str, str | None]] = []

    async def progress(step: str, detail: str | None) -> None:
        steps.append((step, detail))

    out = await backend(kube).deploy(TIME, progress)
    assert out.endpoint == "http://mcp-time.servers.svc.cluster.local/mcp" == out.introspect_url
    assert out.package_version == "2026.10.19"
    applied = kube.of("PATCH")
    assert [(r.body["kind"], r.body["metadata"]["name"]) for r in applied] == [
        ("ConfigMap", "mcp-time-bridge"), ("Secret", "mcp-time-bridge-keys"), ("NetworkPolicy", "mcp-time-egress"),
        ("NetworkPolicy", "mcp-time-ingress"), ("Deployment", "mcp-time"), ("Service", "mcp-time")]
    for r in applied:
        assert r.content_type == "application/apply-patch+yaml"
        assert r.query == {"fieldManager": "wemcp-deployer", "force": "true"}
        assert r.path.startswith(("/api/v1/namespaces/servers/", "/apis/apps/v1/namespaces/servers/",
                                  "/apis/networking.k8s.io/v1/namespaces/servers/"))
        kubernetes_validate.validate(r.body, "1.37.0", strict=True)
    # readiness was awaited on the deployment's status
    assert any(r.path.endswith("/deployments/mcp-time/status") for r in kube.of("GET"))
    assert ("waiting", "Deployment mcp-time ready") in steps
    # the slug's own derived keys, never the platform ring
    secret = kube.objects[("secrets", "servers", "mcp-time-bridge-keys")]
    assert secret["stringData"] == bridge_env(RING, "time")
    assert RING.export() not in str(kube.requests)


async def test_the_sandbox_as_pod_security_and_network_policy(kube: KubeStandIn):
    await backend(kube).deploy(TIME, _noop)
    await backend(kube).deploy(NET, _noop)
    for name, network in (("mcp-time", False), ("mcp-fetcher", True)):
        pod = kube.objects[("deployments", "servers", name)]["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        for c in pod["containers"] + pod["initContainers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65534
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert c["resources"]["limits"]["memory"]
        egress = kube.objects[("networkpolicies", "servers", f"{name}-egress")]["spec"]
        assert egress["policyTypes"] == ["Egress"]
        dns, public = egress["egress"]
        assert {p["port"] for p in dns["ports"]} == {53}
        assert public["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE}}]
        assert "169.254.0.0/16" in PRIVATE and "10.0.0.0/8" in PRIVATE  # cloud metadata, private ranges
        # network off: HTTPS only (the install); on: any port, still public addresses only
        assert public.get("ports") == (None if network else [{"protocol": "TCP", "port": 443}])
        ingress = kube.objects[("networkpolicies", "servers", f"{name}-ingress")]["spec"]
        (rule,) = ingress["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
        (peer,) = rule["from"]
        assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "wemcp"}}
        assert peer["podSelector"]["matchExpressions"][0]["values"] == ["gateway", "deployer"]


async def test_redeploy_is_idempotent_and_lifecycle_calls(kube: KubeStandIn):
    b = backend(kube)
    await b.deploy(TIME, _noop)
    await b.deploy(TIME, _noop)  # applied again: the same objects, no duplicates, no conflict
    assert len([k for k in kube.objects if k[0] == "deployments"]) == 1
    st = await b.status("time")
    assert (st.state, st.replicas) == ("running", 1)
    await b.scale("time", 0)
    assert kube.objects[("deployments", "servers", "mcp-time")]["spec"]["replicas"] == 0
    assert (await b.status("time")).state == "idle"
    await b.scale("time", 2)
    assert (await b.status("time")).replicas == 2
    kube.log_text = f"listening\nleaked {bridge_env(RING, 'time')['WEMCP_BRIDGE_KEYS']}\n"
    logs = await b.logs("time")
    assert "listening" in logs and bridge_env(RING, "time")["WEMCP_BRIDGE_KEYS"] not in logs
    assert any(r.path.endswith("/pods/mcp-time-0/log") and r.query.get("container") == "server"
               for r in kube.of("GET"))
    await b.undeploy("time")
    assert not kube.objects
    await b.undeploy("time")  # already gone: fine
    assert (await b.status("time")).state == "stopped"


async def test_a_pod_that_never_gets_ready_fails_the_deployment(kube: KubeStandIn):
    kube.ready = False
    with pytest.raises(DeployError, match=r"not ready within 0\.3 s.*image pulling"):
        await backend(kube, ready_timeout=0.3).deploy(TIME, _noop)


async def test_an_api_refusal_is_a_deploy_error_not_a_crash(kube: KubeStandIn):
    with pytest.raises(DeployError, match="HTTP 401"):
        await backend(kube, token="wrong").deploy(TIME, _noop)


def test_plan_shows_no_secret():
    plan = KubernetesDeployer(namespace="servers", keys=RING).plan(TIME)
    assert plan.backend == "kubernetes"
    assert plan.actions[0] == "apply ConfigMap servers/mcp-time-bridge"
    assert plan.actions[-1] == "wait for the Deployment mcp-time to be ready"
    assert bridge_env(RING, "time")["WEMCP_BRIDGE_KEYS"] not in str(plan.artifacts)
    assert "<keys derived" in str(plan.artifacts)


async def test_the_running_deployer_offers_the_backend(deployer):
    """The service wires the backend from its settings (DEFAULT_BACKEND=kubernetes picks it)."""
    b = deployer.orch.backends["kubernetes"]
    assert isinstance(b, KubernetesDeployer)
    s = deployer.orch.settings
    assert (b.namespace, b.platform_namespace) == (s.kubernetes_namespace, s.kubernetes_platform_namespace)
    assert b.endpoint("x") == "http://mcp-x.wemcp-servers.svc.cluster.local/mcp"
