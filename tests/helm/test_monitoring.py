"""Monitoring in the chart: the ServiceMonitor, PodMonitor and PrometheusRule validate against their own CRD
schemas (tests/helm/crds, vendored: kubernetes-validate only knows built-in kinds), every alert expression and
dashboard query parses as PromQL and names only series Midwatch really exports, every alert is documented with
what to do, and the scrape targets match the pods' ports."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import promql_parser
import pytest

CRD_DIR = Path(__file__).with_name("crds")
ALL_ON = {"monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                         "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
# The documented alerts and their severities (helm/README.md "Alerts").
ALERTS = {
    "MidwatchNoWorkerHeartbeat": "critical", "MidwatchSchedulerDown": "critical",
    "MidwatchSweeperRecoveringRuns": "warning", "MidwatchMetricsSnapshotFailing": "warning",
    "MidwatchRunsStuck": "warning", "MidwatchQueueWaiting": "warning", "MidwatchEscalationsWaiting": "warning",
    "MidwatchAgentBelowSLO": "warning", "MidwatchBudgetNearLimit": "warning", "MidwatchBreakerOpen": "warning",
    "MidwatchSecretRotationOverdue": "warning", "MidwatchWebhookDeliveriesFailing": "warning",
}
# Grafana's variables, replaced by a value of the right kind before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$window": "7d"}


def _strict(node: Any) -> Any:
    """A CRD's structural schema, made strict like `kubectl apply --validate=strict`: unknown fields are errors
    except where the schema preserves them."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    crd = json.loads((CRD_DIR / f"{kind.lower()}.v1.json").read_text())
    assert crd["kind"] == kind and crd["group"] == "monitoring.coreos.com"
    return jsonschema.Draft7Validator(_strict(crd["openAPIV3Schema"]))


def _metric_names_of(expr: str) -> set[str]:
    """Every series name an expression selects (raises if it does not parse)."""
    tree = promql_parser.parse(expr)
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            found.add(node.name)
        for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, str | int | float):
                visit(child)
        for arg in getattr(node, "args", None) or []:
            visit(arg)

    visit(tree)
    return found


@pytest.fixture(scope="module")
def live_names() -> set[str]:
    """Every series name Midwatch exports: the event metrics of the live registry and the database gauges."""
    from tenants.kit.settings import Settings
    from tenants.observability.exposition import metric_names

    names = metric_names(Settings(), database=True)
    assert "midwatch_workers_alive" in names and "midwatch_sweeper_recoveries_total" in names
    return names


@pytest.fixture(scope="module")
def all_on(kit: Any) -> list[dict[str, Any]]:
    return list(kit.render_docs(ALL_ON))


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_monitoring_is_off_by_default(docs_by_file: dict[str, list[dict[str, Any]]]) -> None:
    docs = docs_by_file["defaults.yaml"]
    assert not [d for d in docs if d["kind"] in MONITORING_KINDS]
    assert not [d for d in docs if d["kind"] == "ConfigMap" and "grafana" in d["metadata"]["name"]]


@pytest.mark.parametrize("source", ["all-on", "monitoring.yaml"])
def test_custom_resources_validate_against_their_crd_schemas(source: str, all_on: list[dict[str, Any]],
                                                             docs_by_file: dict[str, list[dict[str, Any]]]) -> None:
    docs = all_on if source == "all-on" else docs_by_file["monitoring.yaml"]
    kinds = {d["kind"] for d in docs if d["kind"] in MONITORING_KINDS}
    assert kinds == MONITORING_KINDS
    for doc in docs:
        if doc["kind"] in MONITORING_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            errors = sorted(_validator(doc["kind"]).iter_errors(doc), key=str)
            assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])


def test_the_schema_check_catches_a_wrong_field(all_on: list[dict[str, Any]]) -> None:
    (monitor,) = [copy.deepcopy(d) for d in all_on if d["kind"] == "ServiceMonitor"]
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    assert list(_validator("ServiceMonitor").iter_errors(monitor)), "a typo must not validate"
    (rule,) = [copy.deepcopy(d) for d in all_on if d["kind"] == "PrometheusRule"]
    rule["spec"]["groups"][0]["rules"][0]["for"] = "two minutes"
    assert list(_validator("PrometheusRule").iter_errors(rule))


def test_every_alert_parses_and_names_only_series_midwatch_exports(all_on: list[dict[str, Any]],
                                                                    live_names: set[str]) -> None:
    rules = _rules(all_on)
    assert {r["alert"]: r["labels"]["severity"] for r in rules} == ALERTS
    for rule in rules:
        names = _metric_names_of(rule["expr"])
        assert names, rule["alert"]
        assert names <= live_names, f"{rule['alert']} uses series nobody exports: {names - live_names}"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_a_broken_expression_would_be_caught(live_names: set[str]) -> None:
    with pytest.raises(ValueError):  # promql-parser raises ValueError on a syntax error
        _metric_names_of("max by (tenant) (midwatch_runs_stuck > 0")
    assert not _metric_names_of("max(midwatch_worker_alive)") <= live_names, "a misspelt series must not pass"


def test_alert_thresholds_follow_the_values(kit: Any) -> None:
    values = copy.deepcopy(ALL_ON)
    values["monitoring"]["prometheusRule"].update({"escalationWaitMinutes": 60, "budgetRatio": 0.9,
                                                    "sloMinRuns": 25, "stuckRunsFor": "20m",
                                                    "alertLabels": {"team": "platform"}})
    rules = {r["alert"]: r for r in _rules(kit.render_docs(values))}
    assert "> 3600)" in rules["MidwatchEscalationsWaiting"]["expr"]
    assert ">= 0.9)" in rules["MidwatchBudgetNearLimit"]["expr"]
    assert ">= 25" in rules["MidwatchAgentBelowSLO"]["expr"]
    assert rules["MidwatchRunsStuck"]["for"] == "20m"
    assert all(r["labels"]["team"] == "platform" for r in rules.values())
    with pytest.raises(helm_python.HelmValuesError, match="budgetRatio"):
        kit.render(helm_python.parse_set_string("monitoring.prometheusRule.budgetRatio=2"))


def test_every_alert_is_documented_with_what_to_do(kit: Any) -> None:
    readme = (kit.repo_root / "helm" / "README.md").read_text()
    section = readme.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    for alert in ALERTS:
        found = re.search(rf"^### {alert}\n(.*?)(?=^### |\Z)", section, flags=re.MULTILINE | re.DOTALL)
        assert found, f"{alert} is not documented under ## Alerts"
        assert "What to do:" in found.group(1), f"{alert}: no 'What to do:'"


def _container(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"
                     and d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def test_the_monitors_select_the_pods_and_ports_that_serve_metrics(docs_by_file: dict[str, list[dict[str, Any]]]
                                                                    ) -> None:
    docs = docs_by_file["monitoring.yaml"]
    (service_monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (api_service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-api")]
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= api_service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in api_service["spec"]["ports"]}
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    auth = service_monitor["spec"]["endpoints"][0]["authorization"]
    assert auth == {"type": "Bearer", "credentials": {"name": "midwatch-secrets", "key": "metrics-token"}}
    token_env = {e["name"]: e for e in _container(docs, "api")["env"]}["MIDWATCH_METRICS_TOKEN"]
    assert token_env["valueFrom"]["secretKeyRef"] == {"name": "midwatch-secrets", "key": "metrics-token",
                                                      "optional": True}, "the API checks the token Prometheus sends"
    (pod_monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    (expression,) = pod_monitor["spec"]["selector"]["matchExpressions"]
    assert expression["values"] == ["worker", "scheduler"]
    for component, port in (("worker", 9191), ("scheduler", 9190)):
        container = _container(docs, component)
        assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("health", port)]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MIDWATCH_HEALTH_PORT"] == str(port), "the process listens where the pod spec says"
        assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "health"
    assert "MIDWATCH_HEALTH_PORT" not in {e["name"] for e in _container(docs, "api")["env"]}
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-default")]
    (rule,) = policy["spec"]["ingress"]
    assert {p["port"] for p in rule["ports"]} == {8080, 9191, 9190}


def test_worker_and_scheduler_health_ports_must_not_clash_with_the_api(kit: Any) -> None:
    with pytest.raises(helm_python.HelmRenderError, match="healthPort"):
        kit.render(helm_python.parse_set_string("worker.healthPort=8080"))


def test_the_dashboard_queries_parse_and_name_only_exported_series(kit: Any, all_on: list[dict[str, Any]],
                                                                   live_names: set[str]) -> None:
    path = kit.chart_dir / "dashboards" / "midwatch.json"
    dashboard = json.loads(path.read_text())
    (configmap,) = [d for d in all_on if d["kind"] == "ConfigMap" and "grafana" in d["metadata"]["name"]]
    assert json.loads(configmap["data"]["midwatch.json"]) == dashboard
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 25
    titles = {p["title"] for p in dashboard["panels"]}
    for figure in ("Success 24 h", "Success 7 d", "Stuck", "Pending approvals", "Escalated", "Spend per tenant",
                   "Runs finished per hour by outcome", "Below SLO", "Open incidents", "MTTR (median agent)",
                   "Per-step success", "Failed runs per hour by category"):
        assert figure in titles, f"the dashboard lacks the Streamlit figure {figure!r}"
    for raw in exprs:
        expr = raw
        for variable, replacement in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, replacement)
        assert "$" not in expr, f"unknown Grafana variable in {raw!r}"
        names = _metric_names_of(expr)
        assert names <= live_names, f"{raw!r} uses series nobody exports: {names - live_names}"
