"""The Helm chart helm/referee, rendered offline by Helm's own engine (helm-python-sdk
embeds Helm v4 as a library: no helm binary, no cluster, no network) with the default
values and the CI values file of each mode. Every manifest is checked against the
Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail) for the oldest
and newest Kubernetes the chart is checked on, and the RayService against KubeRay's CRD
schema; then what the manifests mean: probes, Secrets, the config, optional objects."""

from __future__ import annotations

import base64
import functools
import re
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from referee.config import load_settings

ROOT = Path(__file__).parents[2]
CHART = ROOT / "helm/referee"
CI = CHART / "ci"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate 1.37.0 ships.
K8S_VERSIONS = ("1.25.0", "1.37.0")
# Kinds outside Kubernetes' own API: checked by their CRD schema or by hand below.
CUSTOM_KINDS = {"RayService", "ServiceMonitor", "PodMonitor"}
CASES = {
    "embedded-default": {},
    "ray-default": {"mode": "ray"},
    "embedded-ci": "embedded-values.yaml",
    "ray-ci": "ray-values.yaml",
}

Manifest = dict[str, Any]


def _values(case: str) -> dict[str, Any]:
    spec = CASES[case]
    if isinstance(spec, str):
        loaded: dict[str, Any] = yaml.safe_load((CI / spec).read_text())
        return loaded
    return dict(spec)


def render(values: dict[str, Any]) -> dict[str, str]:
    chart = helm_python.Chart.load(CHART)
    return chart.render(values, name="rel", namespace="referee-ci", is_install=True)


@functools.cache
def _manifests(case: str) -> tuple[Manifest, ...]:
    return tuple(_parse(render(_values(case))))


def _parse(rendered: dict[str, str]) -> list[Manifest]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def manifests(case: str) -> list[Manifest]:
    return list(_manifests(case))


def one(docs: list[Manifest], kind: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def config_in(docs: list[Manifest]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    return loaded


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(case: str, version: str) -> None:
    docs = manifests(case)
    assert {d["kind"] for d in docs} >= {"ConfigMap", "Service", "ServiceAccount"}
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("case", ["ray-default", "ray-ci"])
def test_the_rayservice_is_valid_against_kuberays_crd_and_its_pods_are_valid_pods(
    case: str,
) -> None:
    rayservice = one(manifests(case), "RayService")
    schema = yaml.safe_load((CI / "rayservice-crd-schema.yaml").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(rayservice, schema, cls=jsonschema.Draft202012Validator)
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [group["template"] for group in cluster["workerGroupSpecs"]]
    for template in templates:  # the CRD inlines core/v1 PodTemplateSpec: check it as one
        pod = {"apiVersion": "v1", "kind": "Pod", **template}
        pod["metadata"] = {"name": "ray-pod", **template["metadata"]}
        kubernetes_validate.validate(pod, K8S_VERSIONS[-1], strict=True)


def test_the_crd_schema_rejects_what_kuberay_would_reject() -> None:
    schema = yaml.safe_load((CI / "rayservice-crd-schema.yaml").read_text())
    good = one(manifests("ray-ci"), "RayService")
    bad_group = yaml.safe_load(yaml.safe_dump(good))
    del bad_group["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    typo = yaml.safe_load(yaml.safe_dump(good))
    typo["spec"]["serveConfig"] = typo["spec"].pop("serveConfigV2")
    for bad in (bad_group, typo):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("case", CASES)
def test_the_configmap_holds_a_valid_referee_config_listening_on_the_service_ports(
    case: str,
) -> None:
    config = config_in(manifests(case))
    settings = load_settings(data=config, environ={})
    assert settings.server.host == "0.0.0.0" and settings.server.port == 8000
    service = one(manifests(case), "Service")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"http": 8000, "grpc": 50051}
    if case.startswith("embedded"):
        assert settings.server.grpc_port == 50051  # the server's own gRPC gateway


@pytest.mark.parametrize("case", ["ray-default", "ray-ci"])
def test_the_serve_config_builds_the_referee_app_from_the_same_config(case: str) -> None:
    docs = manifests(case)
    serve = yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["name"] == "referee" and app["import_path"] == "referee.ray.app:build_app"
    from referee.ray.app import RayAppArgs

    args = RayAppArgs.model_validate(app["args"])  # what build_app will receive
    assert args.config == config_in(docs)
    load_settings(data=args.referee_config(), environ={})
    assert serve["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert serve["grpc_options"]["port"] == 50051
    from referee.ray._grpc import GRPC_SERVICER_FUNCTIONS

    assert serve["grpc_options"]["grpc_servicer_functions"] == GRPC_SERVICER_FUNCTIONS
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    (worker,) = cluster["workerGroupSpecs"]
    gpu = worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert worker["groupName"] == "gpu" and gpu == 1
    assert not [d for d in docs if d["kind"] in {"Deployment", "HorizontalPodAutoscaler"}]


def test_ci_values_reach_each_ray_role_separately() -> None:
    cluster = one(manifests("ray-ci"), "RayService")["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    assert head["nodeSelector"] == {"node-role/ray-head": "true"}
    assert worker["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "nodeAffinity" in worker["affinity"] and "affinity" not in head
    assert worker["tolerations"][0]["key"] == "nvidia.com/gpu" and "tolerations" not in head
    assert head["containers"][0]["image"] == "registry.example.com/referee:cuda"
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["workerGroupSpecs"][0]["maxReplicas"] == 8


@pytest.mark.parametrize("case", ["embedded-default", "embedded-ci"])
def test_probes_check_healthz_and_readyz_with_timings_from_values(case: str) -> None:
    container = one(manifests(case), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["referee", "serve", "--config", "/etc/referee/config.yaml"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    expected = 60 if case == "embedded-ci" else 120
    assert container["startupProbe"]["failureThreshold"] == expected


def _secret_data(docs: list[Manifest]) -> dict[str, str]:
    return {
        key: base64.b64decode(value).decode()
        for d in docs
        if d["kind"] == "Secret"
        for key, value in d["data"].items()
    }


def test_secrets_stay_in_secrets_and_reach_the_server_as_a_file_and_env() -> None:
    docs = manifests("embedded-ci")
    secrets = _secret_data(docs)
    assert secrets["api-keys"] == "ci-key-one\nci-key-two\n"
    assert "ci-redis-password" in secrets["url"] and secrets["JUDGE_API_KEY"] == "ci-judge-token"
    for doc in docs:
        if doc["kind"] != "Secret":
            text = yaml.safe_dump(doc)
            for secret in ("ci-key-one", "ci-redis-password", "ci-judge-token"):
                assert secret not in text, f"{secret} leaked into the {doc['kind']}"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    keys_file = Path(env["REFEREE_SERVER__API_KEYS_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    assert keys_file.parent == Path(mount["mountPath"])
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": keys_file.name}]
    assert env["REFEREE_CACHE__URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert env["REFEREE_CACHE__BACKEND"]["value"] == "redis"
    assert container["envFrom"] == [{"secretRef": {"name": "rel-referee-credentials"}}]


def test_existing_secrets_are_referenced_and_none_are_created() -> None:
    docs = manifests("ray-ci")
    assert not [d for d in docs if d["kind"] == "Secret"]
    head = one(docs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]
    container = head["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["REFEREE_CACHE__URL"]["valueFrom"]["secretKeyRef"]["name"] == "referee-redis"
    assert container["envFrom"] == [{"secretRef": {"name": "referee-judge-credentials"}}]
    volumes = head["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": "referee-api-keys",
            "items": [{"key": "api-keys", "path": "api-keys"}]}} in volumes  # fmt: skip


def test_optional_objects_exist_only_when_enabled() -> None:
    default = {d["kind"] for d in manifests("embedded-default")}
    assert not default & {"ServiceMonitor", "HorizontalPodAutoscaler", "Secret"}
    assert "replicas" in one(manifests("embedded-default"), "Deployment")["spec"]
    ci = manifests("embedded-ci")
    hpa = one(ci, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert "replicas" not in one(ci, "Deployment")["spec"]  # the HPA owns it
    monitor = one(ci, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    selected = monitor["spec"]["selector"]["matchLabels"].items()
    assert selected <= one(ci, "Service")["metadata"]["labels"].items()
    assert "PodMonitor" not in {d["kind"] for d in ci}  # embedded: one /metrics has it all


def test_ray_mode_scrapes_every_ray_pods_metrics_port_for_replica_metrics() -> None:
    docs = manifests("ray-ci")
    monitor = one(docs, "PodMonitor")
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    for pod in pods:
        assert (
            monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        )
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == 8080


def test_a_config_change_changes_the_pod_checksum() -> None:
    def checksum(values: dict[str, Any]) -> str:
        pod = one(_parse(render(values)), "Deployment")["spec"]["template"]
        annotation: str = pod["metadata"]["annotations"]["checksum/config"]
        return annotation

    base = checksum({})
    assert checksum({}) == base
    assert checksum({"config": {"server": {"request_timeout_s": 30}}}) != base


def test_bundled_redis_points_the_cache_at_the_release_redis() -> None:
    # The bitnami chart itself is not vendored (`helm dependency update` fetches it);
    # rendering without it still shows what the Referee pods are told.
    docs = _parse(render({"redis": {"enabled": True}}))
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["REFEREE_CACHE__URL"] == "redis://rel-redis-master:6379/0"
    assert env["REFEREE_CACHE__BACKEND"] == "redis"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "serverless"}, "mode must be embedded or ray"),
        ({"redis": {"enabled": True}, "externalRedis": {"url": "redis://x:6379/0"}}, "not both"),
        ({"mode": "ray", "autoscaling": {"enabled": True}}, "autoscaling"),
    ],
)
def test_values_that_cannot_work_fail_to_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_finds_nothing_but_the_undownloaded_redis_chart(case: str) -> None:
    report = helm_python.lint(CHART, _values(case), strict=True, kube_version="v1.30.0")
    problems = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    problems += report["errors"]
    assert problems, "lint no longer notices the missing redis chart: is it vendored now?"
    assert all("missing these dependencies: redis" in p for p in problems), problems


def test_every_values_key_is_documented_helm_docs_style() -> None:
    """A key has a `# --` comment, or is a group whose keys all have one; the Referee
    config tree under `config` is documented as a whole."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys: list[tuple[int, str, bool, int]] = []  # (indent, key, documented, line number)
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        above = number - 1
        while above >= 0 and lines[above].lstrip().startswith("#"):
            above -= 1
        comments = [lines[i].strip() for i in range(above + 1, number)]
        documented = any(c.startswith("# --") for c in comments)
        keys.append((len(match.group(1)), match.group(2), documented, number))

    def children(index: int) -> list[int]:
        indent = keys[index][0]
        out = []
        for j in range(index + 1, len(keys)):
            if keys[j][0] <= indent:
                break
            if not out or keys[j][0] == keys[out[0]][0]:
                out.append(j)
        return out

    def documented(index: int) -> bool:
        kids = children(index)
        return keys[index][2] or (bool(kids) and all(documented(k) for k in kids))

    undocumented = [keys[i][1] for i in range(len(keys)) if keys[i][0] == 0 and not documented(i)]
    assert not undocumented, f"values without a `# --` comment: {undocumented}"
