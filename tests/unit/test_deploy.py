"""deploy/: the alert rules use only metrics jobwatch exports, the dashboard
queries them too, and the Kubernetes manifests hold what an operator expects.
(.ci/run also schema-checks the manifests and runs promtool when present.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
#: PromQL words that are not metric names.
PROMQL = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "time",
    "absent",
    "absent_over_time",
    "increase",
    "rate",
    "irate",
    "delta",
    "histogram_quantile",
    "changes",
    "resets",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "clamp_min",
    "clamp_max",
    "vector",
    "scalar",
    "le",
}


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that can only be metric names."""
    expr = re.sub(r'"[^"]*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL and not re.fullmatch(r"\d+[smhdwy]?", w)}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


#: Series Prometheus makes itself for every target.
SCRAPE_SERIES = {"up"}


def test_every_alert_names_only_exported_metrics() -> None:
    exported = Metrics().names() | SCRAPE_SERIES
    alerts = rules()
    assert {
        "JobwatchDown",
        "JobwatchNotScraped",
        "JobwatchStreamDown",
        "JobwatchNoRecentEvent",
        "JobwatchNoRecentSweep",
        "JobwatchDoneButOpenJobs",
        "JobwatchSkippedJobsRising",
        "JobwatchDegraded",
        "JobwatchErrorsRising",
        "JobwatchOldOpenJob",
        "JobwatchSlowCompletions",
    } <= {rule["alert"] for rule in alerts}
    for rule in alerts:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']}: {names - exported} not exported"
        assert rule["annotations"]["runbook"].startswith("jobwatch "), rule["alert"]


def test_metric_name_extraction_catches_unknown_names() -> None:
    assert metric_names('sum by (le) (rate(jobwatch_x_bucket{a="b"}[5m])) > 3 and up == 0') == {
        "jobwatch_x_bucket",
        "up",
    }


def test_alerts_judge_by_what_each_watcher_exports_and_per_target() -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in rules()}
    assert by_name["JobwatchDown"].replace(" ", "").startswith("up{")  # per target, not absent() over everything
    assert "jobwatch_sweep_interval_seconds" in by_name["JobwatchNoRecentSweep"]  # not a hard-coded interval
    assert "jobwatch_job_completion_latency_seconds" in by_name["JobwatchSlowCompletions"]


def test_dashboard_queries_exported_metrics() -> None:
    exported = Metrics().names()
    dashboard = json.loads((DEPLOY / "grafana" / "jobwatch.json").read_text())
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("latency", "backlog", "stuck", "sweep"):
        assert topic in titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert metric_names(target["expr"]) <= exported, target["expr"]


def test_dashboard_chooses_job_and_instance() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "jobwatch.json").read_text())
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"job", "instance"} <= variables
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for series in re.findall(r"\bjobwatch_\w+(?:\{[^}]*\})?", target["expr"]):
                assert 'job=~"$job"' in series and 'instance=~"$instance"' in series, (panel["title"], series)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on PATH (.ci/run installs it)")
def test_promtool_accepts_the_rules_and_they_fire_when_they_should() -> None:
    for argv in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            ["promtool", *argv], capture_output=True, text=True, timeout=60, cwd=DEPLOY / "prometheus"
        )
        assert done.returncode == 0, done.stdout + done.stderr


def manifests() -> dict[str, dict[str, Any]]:
    docs = [
        doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc
    ]
    return {doc["kind"]: doc for doc in docs}


def test_kubernetes_deployment_is_safe_by_default() -> None:
    kinds = manifests()
    assert {"Deployment", "Service", "ServiceMonitor", "PodDisruptionBudget"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Started means the first sweep is done (ready), not only that the process answers.
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["enableServiceLinks"] is False  # else JOBWATCH_SERVICE_HOST & co. look like settings
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["JOBWATCH_URI_FILE"].startswith("/run/secrets/")
    assert any(v.get("secret", {}).get("secretName") for v in pod["volumes"])
    assert "JOBWATCH_URI" not in env  # never the URI in plain text


def test_kubernetes_runs_a_standby_through_rollouts_and_drains() -> None:
    kinds = manifests()
    deployment, budget = kinds["Deployment"], kinds["PodDisruptionBudget"]
    assert deployment["spec"]["replicas"] >= 2
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}  # the new pod is up before an old one goes
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pod = deployment["spec"]["template"]["spec"]
    # Longer than the orderly stop: drain and save (shutdown_deadline_s, 10 s) then release the lease.
    assert pod["terminationGracePeriodSeconds"] > 10


DOCS = ROOT / "docs"


def test_the_docs_document_every_metric_alert_and_exit_code() -> None:
    from watcher.cli import exits

    metrics_page = (DOCS / "reference" / "metrics.md").read_text()
    alerts_page = (DOCS / "how-to" / "alerts.md").read_text()
    exit_codes_page = (DOCS / "reference" / "exit-codes.md").read_text()
    families = {name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for name in Metrics().names()}
    for name in families:
        assert f"`{name}" in metrics_page, f"the metrics reference lacks {name}"
    for rule in rules():
        assert f"`{rule['alert']}`" in alerts_page, f"the alerts how-to lacks {rule['alert']}"
    for code in exits.TABLE:
        assert f"\n| {code} | " in exit_codes_page, f"the exit-code reference lacks {code}"
