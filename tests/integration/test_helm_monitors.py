"""The chart's ServiceMonitor and PodMonitor against prometheus-operator's published
monitoring.coreos.com/v1 schemas: those of the npm package
@kubernetes-models/prometheus-operator 6.0.0 (generated from prometheus-operator's Go API
types, pinned in helm/referee/ci/crd-validators/package-lock.json), run by node. No
PyPI or Debian package ships them. They check types, required fields and patterns
(durations, enums); like the API server, which prunes them, they let unknown fields
through, so the fields the chart relies on are also checked by name in
test_helm_chart.py.

The RayService is checked in test_helm_chart.py against a transcription of KubeRay's
CRD named with its source commit (helm/referee/ci/rayservice-crd-schema.yaml): no PyPI,
npm or Debian package ships KubeRay's CRD or a schema generated from it."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_helm_chart import CASES, CI, manifests, one

VALIDATORS = CI / "crd-validators"
MONITORS = {"ServiceMonitor", "PodMonitor"}


@pytest.fixture(scope="module")
def validator() -> Path:
    """The validating script, with its pinned npm packages installed (`npm ci`) once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed: apt-get install nodejs npm (.ci/run does)")
    if not (VALIDATORS / "node_modules/@kubernetes-models/prometheus-operator").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=VALIDATORS, check=True,
                       capture_output=True, timeout=300)  # fmt: skip
    return VALIDATORS / "validate.mjs"


def validate(script: Path, docs: list[dict[str, Any]]) -> list[str | None]:
    done = subprocess.run(["node", str(script)], input=json.dumps(docs), text=True,
                          capture_output=True, check=True, timeout=60)  # fmt: skip
    results = json.loads(done.stdout)
    assert [r["kind"] for r in results] == [d["kind"] for d in docs]
    return [r["error"] for r in results]


def test_every_service_and_pod_monitor_the_chart_renders_matches_the_published_schema(
    validator: Path,
) -> None:
    docs = [d for case in CASES for d in manifests(case) if d["kind"] in MONITORS]
    assert {d["kind"] for d in docs} == MONITORS  # both are rendered by some case
    assert validate(validator, docs) == [None] * len(docs)


def test_the_published_schema_rejects_what_the_operator_would_reject(validator: Path) -> None:
    service = one(manifests("embedded-ci"), "ServiceMonitor")
    pod = one(manifests("ray-ci"), "PodMonitor")
    bad_port = copy.deepcopy(service)
    bad_port["spec"]["endpoints"][0]["port"] = 8000  # a port *name*, a string
    bad_interval = copy.deepcopy(pod)
    bad_interval["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    no_selector = copy.deepcopy(pod)
    del no_selector["spec"]["selector"]
    errors = validate(validator, [bad_port, bad_interval, no_selector])
    assert errors[0] is not None and "port must be string" in errors[0]
    assert errors[1] is not None and "interval must match pattern" in errors[1]
    assert errors[2] is not None and "selector" in errors[2]
