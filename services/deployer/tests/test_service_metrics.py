"""Deployments as metrics (issue 18 part 4): ``wemcp.deployments`` by backend and outcome, and
``wemcp.deployment.duration`` — what the "Deployments" panels and the WemcpDeploymentsFailing alert
read (tests/test_telemetry_names.py ties their names to these instruments)."""

from __future__ import annotations

from wemcp.deployer import service
from wemcp.devstack.testing import metric_points, metric_reader


def test_a_finished_deployment_is_counted_by_backend_and_outcome_with_its_duration() -> None:
    reader = metric_reader()
    first = metric_points(reader)
    before = {(p.attributes["backend"], p.attributes["outcome"]): p.value for p in first.get("wemcp.deployments", [])}
    timed_before = {(p.attributes["backend"], p.attributes["outcome"]): p.count
                    for p in first.get("wemcp.deployment.duration", [])}
    service._deploy_metrics().record("local", "deployed", 2.5)
    service._deploy_metrics().record("local", "failed", 0.5)
    service._deploy_metrics().record("none", "failed", None)  # failed before a backend was chosen
    points = metric_points(reader)
    counts = {(p.attributes["backend"], p.attributes["outcome"]): p.value for p in points["wemcp.deployments"]}
    for key in (("local", "deployed"), ("local", "failed"), ("none", "failed")):
        assert counts[key] == before.get(key, 0) + 1, key
    durations = {(p.attributes["backend"], p.attributes["outcome"]): p for p in points["wemcp.deployment.duration"]}
    assert durations[("local", "deployed")].sum >= 2.5 and durations[("local", "failed")].sum >= 0.5
    assert durations[("local", "deployed")].count == timed_before.get(("local", "deployed"), 0) + 1
    # no duration is made up for the one that had none
    assert (durations[("none", "failed")].count if ("none", "failed") in durations else 0) == \
        timed_before.get(("none", "failed"), 0)
