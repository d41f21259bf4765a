"""The Helm chart, validated offline for both shapes: rendered by Helm's own library (helm-python-sdk), linted,
every built-in object checked by kubernetes-validate in strict mode, every custom resource checked against its
published CRD schema (strict: unknown fields rejected), plus the policies we promise (probes, resources,
non-root, secrets out of ConfigMaps)."""

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "mgpo"
SHAPES = {
    "default": None,
    "small": ROOT / "deploy" / "helm" / "values-small.yaml",
    "paper": ROOT / "deploy" / "helm" / "values-paper.yaml",
}
# The CRDs of KubeRay and the Prometheus operator, as published (not in this repo).
CRDS = Path(os.environ.get("MGPO_CRD_DIR", ROOT.parent / "shared" / "schemas" / "crds"))
KUBERNETES = kubernetes_validate.latest_version()  # the newest schemas the package bundles


def _values(shape: str) -> dict | None:
    path = SHAPES[shape]
    return yaml.safe_load(path.read_text()) if path else None


@pytest.fixture(scope="module", params=sorted(SHAPES))
def rendered(request):
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(_values(request.param), name="mgpo", namespace="ml", is_install=True)
    objects = [
        doc
        for name, text in sorted(manifests.items())
        if not name.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return request.param, objects


def _kind(objects, kind, name_suffix=""):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert found, f"no {kind} *{name_suffix}"
    return found[0]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_chart_lints_clean(shape):
    report = helm.lint(str(CHART), _values(shape), strict=True, kube_version=f"v{KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert report["total_charts_linted"] == 1 and not problems, problems


def test_builtin_objects_are_valid_kubernetes_in_strict_mode(rendered):
    _, objects = rendered
    builtin = [
        o for o in objects if "." not in o["apiVersion"].split("/")[0] or o["apiVersion"].startswith("apps/")
    ]
    assert {o["kind"] for o in builtin} >= {"ConfigMap", "Secret", "Service", "StatefulSet"}
    for obj in builtin:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def _strict(schema: dict) -> dict:
    """The CRD schema with unknown fields rejected wherever the schema lists the known ones."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
                and "additionalProperties" not in node
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _crd_schemas() -> dict[tuple[str, str], dict]:
    schemas = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def test_custom_resources_match_their_published_crds(rendered):
    if not CRDS.is_dir():
        pytest.skip(f"CRD schemas not found at {CRDS} (set MGPO_CRD_DIR): custom resources NOT validated")
    _, objects = rendered
    schemas = _crd_schemas()
    custom = [o for o in objects if (o["apiVersion"], o["kind"]) in schemas]
    assert {o["kind"] for o in custom} == {"RayCluster", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
    for obj in custom:
        validator = jsonschema.Draft7Validator(schemas[(obj["apiVersion"], obj["kind"])])
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, (obj["kind"], errors[:5])


def test_a_misspelled_field_is_caught_by_the_strict_crd_check():
    if not CRDS.is_dir():
        pytest.skip(f"CRD schemas not found at {CRDS}")
    schema = _crd_schemas()[("ray.io/v1", "RayCluster")]
    bad = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "x"},
        "spec": {"headGroupSpecc": {}},
    }
    assert any("headGroupSpecc" in e.message for e in jsonschema.Draft7Validator(schema).iter_errors(bad))


def _containers(objects):
    ray = _kind(objects, "RayCluster")
    pods = [ray["spec"]["headGroupSpec"]["template"]] + [
        g["template"] for g in ray["spec"]["workerGroupSpecs"]
    ]
    pods.append(_kind(objects, "StatefulSet")["spec"]["template"])
    return [(p, c) for p in pods for c in p["spec"]["containers"]]


def test_every_container_has_resources_and_runs_locked_down(rendered):
    _, objects = rendered
    for pod, container in _containers(objects):
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"], container["name"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
        assert security["readOnlyRootFilesystem"] is True


def test_the_control_plane_probes_its_health_endpoints(rendered):
    _, objects = rendered
    head = _kind(objects, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    (cp,) = [c for c in head["containers"] if c["name"] == "control-plane"]
    assert cp["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert cp["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert head["containers"][0]["name"] == "ray-head"  # KubeRay runs Ray in the first container
    service = _kind(objects, "Service", "-api")
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "head"


def test_secrets_stay_out_of_config_maps(rendered):
    _, objects = rendered
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        text = json.dumps(cm)
        assert "password" not in text.lower().replace("redis_password", "") and "requirepass" not in text
    env = {e["name"]: e for _, c in _containers(objects) for e in c.get("env", [])}
    assert "secretKeyRef" in env["REDIS_PASSWORD"]["valueFrom"]
    assert env["MGPO_REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@")
    assert env["MGPO_API_TOKEN_FILE"]["value"] == "/etc/mgpo/token/token"


def test_monitoring_objects_carry_the_tested_rules_and_dashboard(rendered):
    _, objects = rendered
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "mgpo-rules.yaml").read_text())
    assert _kind(objects, "PrometheusRule")["spec"] == rules
    dashboard = _kind(objects, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["mgpo-dashboard.json"]) == json.loads(
        (ROOT / "deploy" / "grafana" / "mgpo-dashboard.json").read_text()
    )
    ports = {e["port"] for e in _kind(objects, "PodMonitor")["spec"]["podMetricsEndpoints"]}
    assert ports == {"mgpo-metrics", "metrics"}
    ray = _kind(objects, "RayCluster")
    for group in ray["spec"]["workerGroupSpecs"]:
        named = {p["name"]: p["containerPort"] for p in group["template"]["spec"]["containers"][0]["ports"]}
        assert named["mgpo-metrics"] == (9400 if group["groupName"] == "learner" else 9410)


def _gpus(group):
    return group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def test_the_shapes_ask_for_the_gpus_they_promise(rendered):
    shape, objects = rendered
    ray = _kind(objects, "RayCluster")
    assert ray["spec"]["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in ray["spec"]["workerGroupSpecs"]}
    learner, rollout = groups["learner"], groups["rollout"]
    learner_slots = json.loads(json.loads(learner["rayStartParams"]["resources"]))["mgpo_learner"]
    run = yaml.safe_load(_kind(objects, "ConfigMap", "-config")["data"]["run.yaml"])
    assert run["learner"]["ray_resources"] == {"mgpo_learner": 1} and run["rollout"]["ray_resources"] == {
        "mgpo_rollout": 1
    }
    expected = {"default": (1, 1, 2), "small": (1, 1, 2), "paper": (8, 2, 16)}[shape]
    assert (learner["replicas"] * _gpus(learner), rollout["minReplicas"], rollout["maxReplicas"]) == expected
    # every learner rank finds its GPU and its slot of the learner group's resource
    ranks = run["learner"].get("world_size", 1)
    assert ranks * run["learner"]["ray_resources"]["mgpo_learner"] <= learner_slots == _gpus(learner)
    assert ranks * run["learner"]["gpus"] <= learner["replicas"] * _gpus(learner)
    assert run["autoscale"]["max_actors"] == rollout["maxReplicas"] * _gpus(rollout)


def test_the_run_defaults_are_a_valid_run_config(rendered):
    from runtime.config import parse_config

    _, objects = rendered
    data = _kind(objects, "ConfigMap", "-config")["data"]
    run = parse_config(yaml.safe_load(data["run.yaml"]), "run.yaml")
    assert run.rollout.engine == "vllm" and run.metrics.learner_port == 9400
    serve = yaml.safe_load(data["serve.yaml"])
    from runtime.config import ServeConfig

    assert ServeConfig.model_validate(serve).run_defaults == "/etc/mgpo/run.yaml"
