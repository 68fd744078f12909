"""The Helm chart, proved without a cluster: lint, render, validate against the Kubernetes
OpenAPI schemas, and check the platform policy on the rendered manifests.

Helpers come from the ``kit`` fixture in conftest.py; ``values_file`` is parametrized over
helm/ci/*.yaml there.
"""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python
import kubernetes_validate
import pytest

K8S_VERSIONS = ["1.29", "1.31"]
EXPECTED_VALUES_FILES = ["defaults.yaml", "ha-autoscaling.yaml", "ingress.yaml", "monitoring.yaml", "rabbitmq.yaml"]
# Custom resources: kubernetes-validate does not know them; test_monitoring.py validates them against their CRDs.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
SECRET_ENV = {"MIDWATCH_DATABASE_URL", "MIDWATCH_BROKER_URL", "MIDWATCH_MASTER_KEY", "MIDWATCH_OPERATOR_KEY"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _by_component(docs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind and d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} for {component}, got {len(found)}"
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env") or []}


def _walk_strings(node: Any, path: tuple[Any, ...] = ()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, (*path, i))
    elif isinstance(node, str):
        yield path, node


# --------------------------------------------------------------------------- structure


def test_ci_values_files_present(kit):
    assert kit.values_files == EXPECTED_VALUES_FILES
    assert kit.load_ci_values("defaults.yaml") == {}


def test_chart_metadata_matches_package(kit):
    import tomllib

    import yaml

    chart = yaml.safe_load((kit.chart_dir / "Chart.yaml").read_text())
    project = tomllib.loads((kit.repo_root / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"] == "0.1.0"


def test_schema_is_self_contained_and_closed(kit):
    schema = json.loads((kit.chart_dir / "values.schema.json").read_text())

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            assert ref is None or str(ref).startswith("#"), f"remote $ref at {where}: {ref}"
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for k, v in node.items():
                visit(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                visit(v, f"{where}/{i}")

    visit(schema, "#")


def test_every_value_is_commented(kit):
    """Every key in values.yaml is preceded by a comment line, except section headers and the
    contents of example list items (documented by the list's own comment)."""
    lines = (kit.chart_dir / "values.yaml").read_text().splitlines()
    missing = []
    list_indent: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if list_indent is not None and indent > list_indent:
            continue
        list_indent = indent if stripped.startswith("-") else None
        if list_indent is not None:
            continue
        key, _, rest = stripped.partition(":")
        is_section = rest.strip() == ""
        previous = lines[i - 1].strip() if i else ""
        if not is_section and not previous.startswith("#"):
            missing.append(key)
    assert missing == [], f"values without a comment: {missing}"


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaf_paths(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_readme_documents_every_value_and_the_secret(kit):
    import yaml

    readme = (kit.repo_root / "helm" / "README.md").read_text()
    values_section = readme.split("\n## Values\n", 1)[1]
    table = dict(re.findall(r"^\| `([^`]+)` \| `(.*?)` \|", values_section, flags=re.MULTILINE))
    values = yaml.safe_load((kit.chart_dir / "values.yaml").read_text())
    leaves = _leaf_paths(values)
    assert sorted(table) == sorted(leaves), set(table) ^ set(leaves)
    for path in leaves:
        node: Any = values
        for part in path.split("."):
            node = node[part]
        assert json.loads(table[path]) == node, f"README default for {path} is stale"
    assert "kubectl -n midwatch create secret generic midwatch-secrets" in readme
    for key in values["existingSecret"]["keys"].values():
        assert f"--from-literal={key}=" in readme
    for topic in ("helm upgrade", "helm rollback", "rotate-master-key", "operator key", "replicaCount"):
        assert topic in readme, topic


# --------------------------------------------------------------------------- lint / validate


def test_lint_strict(kit, values_file):
    report = helm_python.lint(kit.chart_dir, kit.load_ci_values(values_file), strict=True)
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_manifests_validate_against_kubernetes(docs_by_file, values_file, k8s_version):
    docs = docs_by_file[values_file]
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - message on failure
            pytest.fail(
                f"{values_file}: {doc['kind']}/{doc['metadata']['name']} invalid for {k8s_version}: {exc}"
            )


def test_expected_resources_rendered(docs_by_file):
    docs = docs_by_file["defaults.yaml"]
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(
        {
            "ConfigMap",
            "Deployment",
            "Job",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        }
    )
    components = {
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in docs if d["kind"] == "Deployment"
    }
    assert components == {"api", "worker", "scheduler", "dashboard"}
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Service"} == {
        "mw-midwatch-api",
        "mw-midwatch-dashboard",
    }
    for sa in docs_by_file["defaults.yaml"]:
        if sa["kind"] == "ServiceAccount":
            assert sa["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- security policy


def test_restricted_security_context_everywhere(docs_by_file, values_file):
    for doc, spec in [(d, s) for d in docs_by_file[values_file] if (s := _pod_spec(d))]:
        pod_sc = spec.get("securityContext") or {}
        assert spec.get("automountServiceAccountToken") is False, doc["metadata"]["name"]
        mounts_tmp_volume = any("emptyDir" in v for v in spec.get("volumes") or [] if v["name"] == "tmp")
        assert mounts_tmp_volume, doc["metadata"]["name"]
        for c in _containers(spec):
            where = f"{values_file}: {doc['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext") or {}
            run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            assert run_as_non_root is True, where
            assert isinstance(run_as_user, int) and run_as_user > 0, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged") in (None, False), where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert seccomp == "RuntimeDefault", where
            assert {"name": "tmp", "mountPath": "/tmp"} in c.get("volumeMounts", []), where


def test_resources_on_every_container(docs_by_file, values_file):
    for doc, spec in [(d, s) for d in docs_by_file[values_file] if (s := _pod_spec(d))]:
        for c in _containers(spec):
            res = c.get("resources") or {}
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert res.get(section, {}).get(resource), (
                        f"{values_file}: {doc['metadata']['name']}/{c['name']} lacks {section}.{resource}"
                    )


def test_images_are_pinned(docs_by_file, values_file):
    for doc, spec in [(d, s) for d in docs_by_file[values_file] if (s := _pod_spec(d))]:
        for c in _containers(spec):
            image = c["image"]
            if "@sha256:" in image:
                assert re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", image), image
                continue
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag, f"{doc['metadata']['name']}: image without tag: {image}"
            assert tag and tag != "latest", f"{doc['metadata']['name']}: unpinned image {image}"


def test_image_tag_latest_rejected(kit):
    with pytest.raises(helm_python.HelmValuesError, match="tag"):
        kit.render(helm_python.parse_set_string("image.tag=latest"))


def test_probes_on_long_running_containers(docs_by_file, values_file):
    for doc in docs_by_file[values_file]:
        if doc["kind"] not in LONG_RUNNING_KINDS:
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            for probe in ("livenessProbe", "readinessProbe"):
                assert c.get(probe), f"{doc['metadata']['name']}/{c['name']} has no {probe}"
            port_names = {p["name"] for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                http = c[probe].get("httpGet")
                assert http and http["port"] in port_names, f"{doc['metadata']['name']}: {probe} port"


def test_probe_paths_follow_the_app_contract(docs_by_file):
    docs = docs_by_file["defaults.yaml"]
    expected = {
        "api": ("/healthz", "/readyz", 8080),
        "worker": ("/healthz", "/readyz", 9091),
        "scheduler": ("/healthz", "/readyz", 9090),
        "dashboard": ("/_stcore/health", "/_stcore/health", 8501),
    }
    for component, (live, ready, port) in expected.items():
        c = _by_component(docs, "Deployment", component)["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["httpGet"]["path"] == live
        assert c["readinessProbe"]["httpGet"]["path"] == ready
        assert [p["containerPort"] for p in c["ports"]] == [port]


# --------------------------------------------------------------------------- process layout


def test_scheduler_is_always_a_single_recreated_replica(docs_by_file, kit):
    pushy = helm_python.parse_set_string(
        "api.replicaCount=9,worker.replicaCount=9,dashboard.replicaCount=3,"
        "api.autoscaling.enabled=true,worker.autoscaling.enabled=true"
    )
    variants = [*docs_by_file.values(), kit.render_docs(pushy)]
    for docs in variants:
        scheduler = _by_component(docs, "Deployment", "scheduler")
        assert scheduler["spec"]["replicas"] == 1
        assert scheduler["spec"]["strategy"] == {"type": "Recreate"}
        hpa_targets = {
            h["spec"]["scaleTargetRef"]["name"] for h in kit.of_kind(docs, "HorizontalPodAutoscaler")
        }
        assert scheduler["metadata"]["name"] not in hpa_targets


def test_scheduler_replicas_not_configurable(kit):
    with pytest.raises(helm_python.HelmValuesError, match="replicaCount"):
        kit.render(helm_python.parse_set_string("scheduler.replicaCount=2"))


def test_worker_grace_exceeds_shutdown_grace(docs_by_file, values_file):
    docs = docs_by_file[values_file]
    worker = _by_component(docs, "Deployment", "worker")
    configmap = next(iter(d for d in docs if d["kind"] == "ConfigMap"))
    shutdown_grace = int(configmap["data"]["MIDWATCH_SHUTDOWN_GRACE_S"])
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > shutdown_grace


def test_worker_grace_guard_fails_render(kit):
    bad = helm_python.parse_set_string(
        "worker.shutdownGraceSeconds=60,worker.terminationGracePeriodSeconds=30"
    )
    with pytest.raises(helm_python.HelmRenderError, match="terminationGracePeriodSeconds"):
        kit.render(bad)


def test_configmap_carries_the_env_contract(docs_by_file):
    configmap = next(d for d in docs_by_file["defaults.yaml"] if d["kind"] == "ConfigMap")
    assert configmap["data"] == {
        "MIDWATCH_ENV": "production",
        "MIDWATCH_HOST": "0.0.0.0",
        "MIDWATCH_PORT": "8080",
        "MIDWATCH_DASHBOARD_PORT": "8501",
        "MIDWATCH_WORKER_THREADS": "8",
        "MIDWATCH_SHUTDOWN_GRACE_S": "25",
        "MIDWATCH_LOG_FORMAT": "json",
        "MIDWATCH_LOG_LEVEL": "info",
        "MIDWATCH_ALLOW_LOOPBACK_EGRESS": "false",
        "MIDWATCH_DATA_DIR": "/tmp/midwatch",
        "MIDWATCH_OTLP_ENDPOINT": "",
        "MIDWATCH_METRICS_REFRESH_SECONDS": "15",
        "HOME": "/tmp",
    }


def test_autoscaling_hands_replicas_to_the_hpa(docs_by_file):
    docs = docs_by_file["ha-autoscaling.yaml"]
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in docs if h["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {"mw-midwatch-api", "mw-midwatch-worker"}
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
        assert "replicas" not in deployment["spec"], f"{name}: replicas would fight the HPA"
    assert not [d for d in docs_by_file["defaults.yaml"] if d["kind"] == "HorizontalPodAutoscaler"]


def test_selectors_match_pods(docs_by_file, values_file):
    docs = docs_by_file[values_file]
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"]

    def matches(selector: dict[str, str]) -> int:
        return sum(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels)

    for d in docs:
        if d["kind"] == "Deployment":
            assert (
                d["spec"]["selector"]["matchLabels"].items()
                <= d["spec"]["template"]["metadata"]["labels"].items()
            )
        elif d["kind"] == "Service":
            assert matches(d["spec"]["selector"]) == 1, d["metadata"]["name"]
        elif d["kind"] == "PodDisruptionBudget":
            assert matches(d["spec"]["selector"]["matchLabels"]) == 1, d["metadata"]["name"]
            assert _by_component(docs, "Deployment", d["metadata"]["labels"]["app.kubernetes.io/component"])
    pdb_components = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    assert "scheduler" not in pdb_components


def test_ingress_routes_to_rendered_services(docs_by_file):
    docs = docs_by_file["ingress.yaml"]
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    backends = {
        p["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]
    }
    assert backends == {"mw-midwatch-api", "mw-midwatch-dashboard"}
    assert backends <= services
    assert ingress["spec"]["tls"][0]["secretName"] == "midwatch-tls"
    assert not [d for d in docs_by_file["defaults.yaml"] if d["kind"] == "Ingress"]


def test_ingress_to_disabled_dashboard_fails(kit):
    values = kit.load_ci_values("ingress.yaml")
    values["dashboard"] = {"enabled": False}
    with pytest.raises(helm_python.HelmRenderError, match="dashboard"):
        kit.render(values)


def test_dashboard_can_be_disabled(docs_by_file):
    docs = docs_by_file["rabbitmq.yaml"]
    assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboard"]


# --------------------------------------------------------------------------- network policy


def test_network_policy_ingress_only_to_api_and_dashboard(docs_by_file, values_file):
    docs = docs_by_file[values_file]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policies
    default = next(
        p for p in policies if "app.kubernetes.io/component" not in p["spec"]["podSelector"]["matchLabels"]
    )
    assert set(default["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    serving = {  # the ports the api, worker and scheduler containers serve /metrics on
        p["containerPort"] for d in docs if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] in ("api", "worker", "scheduler")
        for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for rule in default["spec"].get("ingress") or []:
        # only optional metrics scraping, from an explicit namespace selector
        assert rule["from"] and all("namespaceSelector" in peer for peer in rule["from"])
        assert {p["port"] for p in rule["ports"]} == serving
    opened = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in policies
        if p is not default and p["spec"].get("ingress")
    }
    dashboard_on = any(
        d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboard"
        for d in docs
    )
    assert opened == ({"api", "dashboard"} if dashboard_on else {"api"})


def test_network_policy_egress(docs_by_file, kit):
    def egress_ports(docs):
        default = next(
            d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-default")
        )
        return default["spec"]["egress"]

    rules = egress_ports(docs_by_file["defaults.yaml"])
    ports = [{p["port"] for p in r["ports"]} for r in rules]
    assert ports == [{53}, {5432}, {6379}]  # DNS, PostgreSQL, Redis; nothing else by default

    rabbit = [{p["port"] for p in r["ports"]} for r in egress_ports(docs_by_file["rabbitmq.yaml"])]
    assert {5672} in rabbit and {6379} not in rabbit

    ha = egress_ports(docs_by_file["ha-autoscaling.yaml"])
    cidrs = [[peer["ipBlock"]["cidr"] for peer in r.get("to", [])] for r in ha]
    assert cidrs == [[], ["10.20.0.0/16"], ["10.30.0.0/16"], ["0.0.0.0/0"]]

    custom = kit.render_docs(
        helm_python.parse_set_json('networkPolicy.egressCIDRs=["203.0.113.0/24","198.51.100.7/32"]')
    )
    outbound = egress_ports(custom)[-1]
    assert [peer["ipBlock"]["cidr"] for peer in outbound["to"]] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert [p["port"] for p in outbound["ports"]] == [443]


# --------------------------------------------------------------------------- secrets


def test_no_secret_objects_and_secret_env_by_reference_only(docs_by_file, values_file):
    docs = docs_by_file[values_file]
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart must never render a Secret"
    for doc, spec in [(d, s) for d in docs if (s := _pod_spec(d))]:
        for c in _containers(spec):
            env = _env(c)
            assert env.keys() >= SECRET_ENV, f"{doc['metadata']['name']}/{c['name']}"
            for name in SECRET_ENV:
                assert "value" not in env[name], name
                assert env[name]["valueFrom"]["secretKeyRef"]["name"]
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        assert not SECRET_ENV & cm["data"].keys()


def test_secret_name_sentinel_only_in_secret_key_refs(kit):
    sentinel = "sentinel-7f3a9c-secret-ref"
    values = helm_python.parse_set_string(
        f"existingSecret.name={sentinel},"
        f"existingSecret.keys.masterKey={sentinel}-master,"
        # secret-looking strings in places that are NOT secrets must be rendered verbatim, not hidden
        "podAnnotations.note=postgresql://not:a-secret@example/db,"
        "serviceAccount.annotations.iam=arn:aws:iam::000000000000:role/fake-AKIA0000"
    )
    rendered = kit.render(values)
    docs = kit.manifests(rendered)
    assert not [d for d in docs if d["kind"] == "Secret"]
    hits = [(d["kind"], path) for d in docs for path, text in _walk_strings(d) if sentinel in text]
    assert hits, "sentinel not rendered at all"
    for kind, path in hits:
        assert path[-2:] == ("secretKeyRef", "name") or path[-2:] == ("secretKeyRef", "key"), (kind, path)
    text = "\n".join(v for k, v in rendered.items() if not k.endswith("NOTES.txt"))
    assert "postgresql://not:a-secret@example/db" in text


@pytest.mark.parametrize(
    "expression",
    [
        "database.url=postgresql://u:p@h/db",
        "broker.url=redis://:p@h:6379/0",
        "config.masterKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
        "existingSecret.operatorKey=mw_op_0123456789",
        "secrets.masterKey=x",
    ],
)
def test_schema_refuses_secret_values(kit, expression):
    with pytest.raises(helm_python.HelmValuesError, match="not allowed"):
        kit.render(helm_python.parse_set_string(expression))


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("expression", "key"),
    [
        ("replicaCount=two", "replicaCount"),
        ("api.replicaCount=two", "replicaCount"),
        ("bogusKey=1", "bogusKey"),
        ("worker.bogusKey=1", "bogusKey"),
        ("api.resources.requests.gpu=1", "gpu"),
        ("broker.type=kafka", "type"),
        ("networkPolicy.egressCIDRs={not-a-cidr}", "egressCIDRs"),
        ("config.logLevel=chatty", "logLevel"),
        ("securityContext.runAsUser=0", "runAsUser"),
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(kit, expression, key):
    values = helm_python.parse_set_string(expression)
    with (
        helm_python.Chart.load(kit.chart_dir) as chart,
        pytest.raises(helm_python.HelmValuesError, match=key),
    ):
        chart.validate_schema(chart.merge_values(values))
    with pytest.raises(helm_python.HelmValuesError, match=key):
        kit.render(values)


def test_schema_accepts_every_ci_values_file(kit, values_file):
    with helm_python.Chart.load(kit.chart_dir) as chart:
        chart.validate_schema(chart.merge_values(kit.load_ci_values(values_file)))


# --------------------------------------------------------------------------- migrations hook


def test_migration_job_is_a_pre_install_pre_upgrade_hook(docs_by_file, values_file, kit):
    docs = docs_by_file[values_file]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert kit.hooks(job) == {"pre-install", "pre-upgrade"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for d in docs:
        if d["kind"] == "Deployment":
            assert not kit.hooks(d), f"{d['metadata']['name']} must not be a hook"


def test_migration_job_dependencies_exist_before_it(docs_by_file, values_file, kit):
    """Everything the hook Job references is either a lower-weight hook or not rendered by the chart
    (so it pre-exists, like the credentials Secret); never a plain release resource, which Helm
    creates only after pre-install hooks."""
    docs = docs_by_file[values_file]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    job_weight = kit.hook_weight(job)
    spec = job["spec"]["template"]["spec"]
    refs: list[tuple[str, str]] = [("ServiceAccount", spec.get("serviceAccountName", "default"))]
    for c in _containers(spec):
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                refs.append(("ConfigMap", src["configMapRef"]["name"]))
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                refs.append(("ConfigMap", ref["name"]))
    for vol in spec.get("volumes") or []:
        if "configMap" in vol:
            refs.append(("ConfigMap", vol["configMap"]["name"]))
    for kind, name in refs:
        rendered = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        for dep in rendered:
            assert kit.hooks(dep) >= {"pre-install", "pre-upgrade"}, (
                f"{kind}/{name} is not a pre-install hook"
            )
            assert kit.hook_weight(dep) < job_weight, f"{kind}/{name} is not created before the Job"


def test_migration_job_environment_matches_deployments(docs_by_file, values_file):
    docs = docs_by_file[values_file]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    job_env = {
        e["name"]: e.get("value")
        for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in e
    }
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    assert job_env == configmap["data"]


def test_migrations_can_be_disabled(kit):
    docs = kit.render_docs({"migrations": {"enabled": False}})
    assert not [d for d in docs if d["kind"] == "Job" or kit.hooks(d)]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    return None
