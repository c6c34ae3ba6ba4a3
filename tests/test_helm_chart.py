"""The Helm chart deploy/helm/wemcp, rendered offline by the Helm v4 engine itself (the
``helm-python-sdk`` wheel bundles Helm's Go SDK as ``libhelm_c``; no helm binary, no cluster) with the
default values and with the production example, and every rendered object validated against the
strict Kubernetes JSON schemas of ``kubernetes-validate`` (unknown fields are errors).

Beyond the schemas, the rendered settings are fed to each service's own settings class, so a name the
chart sets that the code does not read (or a value it cannot parse) fails here.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "wemcp"
PRODUCTION = CHART / "examples" / "production.yaml"
VERSIONS = ["1.30.0", "1.37.0"]
SERVICES = ["gateway", "auth", "catalog", "goods", "deployer", "ratelimit", "crawler", "agents"]


def render(values: dict[str, Any] | None = None, release: str = "wemcp") -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    out = chart.render(values or {}, name=release, namespace="wemcp", is_install=True)
    return [doc for path, text in sorted(out.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def production_values() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION.read_text())


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def production_docs() -> list[dict[str, Any]]:
    return render(production_values(), release="prod")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("which", ["default", "production"])
def test_every_rendered_object_validates(which: str, version: str, default_docs, production_docs):
    docs = default_docs if which == "default" else production_docs
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "NetworkPolicy", "Job",
            "ServiceAccount", "Role", "RoleBinding", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        assert kubernetes_validate.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]


def test_the_validator_refuses_a_broken_object(default_docs):
    """The check above can fail: a typo'd field and a wrong type are both refused."""
    dep = copy.deepcopy(by_kind(default_docs, "Deployment")["wemcp-gateway"])
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.37.0", strict=True)
    dep = copy.deepcopy(by_kind(default_docs, "Deployment")["wemcp-gateway"])
    dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.37.0", strict=True)


def test_a_deployment_and_service_per_service_hardened_and_probed(default_docs):
    deps, svcs = by_kind(default_docs, "Deployment"), by_kind(default_docs, "Service")
    assert sorted(deps) == sorted(f"wemcp-{s}" for s in SERVICES) == sorted(svcs)
    for name, dep in deps.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        (c,) = pod["containers"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["resources"]["requests"] and c["resources"]["limits"]
        # the read-only root leaves writable only the emptyDirs mounted
        assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp", "/var/lib/wemcp"}
        # only the deployer talks to the Kubernetes API
        assert pod["automountServiceAccountToken"] is (name == "wemcp-deployer")
        sel = dep["spec"]["selector"]["matchLabels"]
        assert svcs[name]["spec"]["selector"] == sel
    gw = deps["wemcp-gateway"]["spec"]["template"]["spec"]["containers"][0]
    # a sick service must not restart the gateways: liveness is the socket, readiness the full report
    assert "tcpSocket" in gw["livenessProbe"]
    assert deps["wemcp-catalog"]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] \
        == "/healthz"


def test_secrets_only_by_reference(default_docs, production_docs):
    for docs, secret in ((default_docs, "wemcp"), (production_docs, "wemcp-prod")):
        assert "Secret" not in {d["kind"] for d in docs}  # the chart creates none
        for dep in [*by_kind(docs, "Deployment").values(), *by_kind(docs, "Job").values()]:
            env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
            assert env["DATABASE_URL"] == {"secretKeyRef": {"name": secret, "key": "DATABASE_URL"}}
            for name, value in env.items():
                if any(w in name for w in ("SECRET", "KEYS", "KEKS", "DATABASE", "REDIS")):
                    assert isinstance(value, dict) and "secretKeyRef" in value, name


def test_nats_by_url_by_default_the_official_chart_only_when_enabled(default_docs, production_docs):
    env = env_of(by_kind(default_docs, "Deployment")["wemcp-catalog"]["spec"]["template"]["spec"]["containers"][0])
    assert env["NATS_URL"] == "nats://nats.nats.svc.cluster.local:4222"
    assert not any(d["metadata"]["name"].endswith("nats") for d in default_docs)  # the subchart is not rendered
    env = env_of(by_kind(production_docs, "Deployment")["prod-wemcp-catalog"]["spec"]["template"]["spec"]
                 ["containers"][0])
    assert env["NATS_URL"] == {"secretKeyRef": {"name": "wemcp-prod-nats", "key": "url"}}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc.cluster.local:4318"
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (dep,) = meta["dependencies"]
    assert (dep["name"], dep["condition"]) == ("nats", "nats.enabled")


def test_gateway_ingress_and_autoscaler(default_docs, production_docs):
    hpa = by_kind(default_docs, "HorizontalPodAutoscaler")["wemcp-gateway"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "wemcp-gateway"}
    # the autoscaler owns the replica count
    assert "replicas" not in by_kind(default_docs, "Deployment")["wemcp-gateway"]["spec"]
    ing = by_kind(production_docs, "Ingress")["prod-wemcp-gateway"]
    assert ing["spec"]["tls"] == [{"hosts": ["mcp.example.com"], "secretName": "mcp-example-com-tls"}]
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "prod-wemcp-gateway"
    assert by_kind(production_docs, "HorizontalPodAutoscaler")["prod-wemcp-gateway"]["spec"]["maxReplicas"] == 20
    off = render({"gateway": {"autoscaling": {"enabled": False}, "ingress": {"enabled": False}}})
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in off}
    assert "Ingress" not in {d["kind"] for d in off}
    assert by_kind(off, "Deployment")["wemcp-gateway"]["spec"]["replicas"] == 2


def test_network_policies_only_the_release_reaches_service_ports(default_docs, production_docs):
    pols = by_kind(default_docs, "NetworkPolicy")
    svc = pols["wemcp-services"]["spec"]
    assert svc["policyTypes"] == ["Ingress"]
    assert svc["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": "wemcp", "wemcp.io/service": "true"}
    (rule,) = svc["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "wemcp",
                                                             "wemcp.io/service": "true"}}}]
    # every service pod carries the label the policy selects
    for dep in by_kind(default_docs, "Deployment").values():
        assert dep["spec"]["template"]["metadata"]["labels"]["wemcp.io/service"] == "true"
    # the gateway alone is open to the ingress (production: only the ingress controller's namespace)
    gw = by_kind(production_docs, "NetworkPolicy")["prod-wemcp-gateway"]["spec"]
    assert gw["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "gateway"
    assert gw["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]
    egress = by_kind(production_docs, "NetworkPolicy")["prod-wemcp-egress"]["spec"]["egress"]
    assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in egress[-1]["to"]


def test_migrations_run_as_a_hook_job(default_docs):
    (job,) = by_kind(default_docs, "Job").values()
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "wemcp.devstack.cli", "migrate"]
    # agents_0003 re-seals the stored model-provider keys: the job gets their secret, by reference
    env = {e["name"]: e.get("valueFrom") for e in c["env"]}
    assert env["WEMCP_AGENTS_PROVIDER_KEY_SECRET"] == {
        "secretKeyRef": {"name": "wemcp", "key": "WEMCP_AGENTS_PROVIDER_KEY_SECRET"}}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert render({"migrations": {"enabled": False}}) and "Job" not in {d["kind"] for d in
                                                                        render({"migrations": {"enabled": False}})}


def test_the_deployers_role_is_limited_to_the_servers_namespace(default_docs):
    role = by_kind(default_docs, "Role")["wemcp-deployer"]
    assert role["metadata"]["namespace"] == "wemcp-servers"
    verbs = {v for r in role["rules"] for v in r["verbs"]}
    assert "escalate" not in verbs and "bind" not in verbs and "*" not in verbs
    binding = by_kind(default_docs, "RoleBinding")["wemcp-deployer"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "wemcp", "namespace": "wemcp"}]


@pytest.mark.parametrize("service", SERVICES)
def test_the_rendered_environment_is_what_the_service_reads(service: str, production_docs, monkeypatch):
    """Each Deployment's plain settings parse with the service's own settings class (secret values
    filled with stand-ins), and the names it sets under the service's prefix are fields there."""
    dep = by_kind(production_docs, "Deployment")[f"prod-wemcp-{service}"]
    env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
    stand_ins = {"DATABASE_URL": "postgresql://u:p@db:5432/wemcp", "REDIS_URL": "redis://redis:6379/0",
                 "WEMCP_SERVICE_KEYS": "k1:" + "A" * 44, "NATS_URL": "nats://nats:4222",
                 "AGENT_RUN_SECRET": "s" * 32, "WEMCP_AGENTS_PROVIDER_KEY_SECRET": "p" * 32,
                 "WEMCP_AUTH_KEKS": "k1:" + "B" * 44}
    import os

    for k in list(os.environ):
        if k.startswith("WEMCP_") or k in stand_ins:
            monkeypatch.delenv(k)
    for name, value in env.items():
        if name == "POD_IP":
            value = "10.0.0.7"
        elif isinstance(value, dict):
            value = stand_ins[name]
        monkeypatch.setenv(name, value.replace("$(POD_IP)", "10.0.0.7"))
    config = importlib.import_module(f"wemcp.{service}.config")
    settings_cls = config.Settings
    prefix = f"WEMCP_{service.upper()}_"
    fields = {f.upper() for f in settings_cls.model_fields}
    for name in env:
        if name.startswith(prefix):
            assert name.removeprefix(prefix) in fields, f"{name} is not a setting of {service}"
    s = settings_cls()
    assert (s.host, s.port) == ("0.0.0.0", 8000)
    assert s.environment == "production"
