"""Live reloads in Ray Serve mode, on a local Ray cluster on this CPU machine: 2 ingress
replicas and 2 replicas of a classifier deployment. A reload through the admin API on
whichever ingress replica gets it switches every replica: requests streaming meanwhile
are all answered, each wholly by the old or wholly by the new version (and says which),
and every request after the call returns gets the new one. A version that fails to load
changes nothing; a replica started later serves what is committed; old versions are
unloaded once retired."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray", reason="distributed mode needs the ray extra")
serve = pytest.importorskip("ray.serve")

pytestmark = pytest.mark.slow

ADMIN = {"authorization": "Bearer adm"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(model: Path) -> dict[str, Any]:
    return {
        "scorers": {
            "rm": {"kind": "classifier", "options": {"model": str(model), "input": "pair"}},
            "fmt": {"kind": "format", "options": {"mode": "think_answer"}},
        },
        "pipelines": {
            "both": {"reward": {"type": "weighted_sum", "weights": [1.0, 0.5],
                                "inputs": ["rm", "fmt"]}},
        },
        "cache": {"backend": "none"},
        "server": {"admin_api_keys": ["adm"], "request_timeout_s": 4},
    }  # fmt: skip


def items(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"id": f"{tag}-{i}", "prompt": f"question {i % 7}",
             "response": ("<think>ok</think><answer>x</answer> " if i % 3 else "") + "word " * (1 + i % 30)}
            for i in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(minilm_classifier: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    from referee.ray import build_app
    from referee.ray._grpc import GRPC_SERVICER_FUNCTIONS

    port, grpc_port = free_port(), free_port()
    cfg = config(minilm_classifier)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})  # fmt: skip
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port},
                    grpc_options={"port": grpc_port,
                                  "grpc_servicer_functions": GRPC_SERVICER_FUNCTIONS})  # fmt: skip
        app = build_app({"config": cfg, "ingress": {"num_replicas": 2},
                         "scorers": {"rm": {"num_replicas": 2}}})  # fmt: skip
        serve.run(app, name="referee", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "Ray Serve app not ready in 120 s"
            time.sleep(0.5)
        cfg["_grpc_url"] = f"grpc://127.0.0.1:{grpc_port}"
        yield url, cfg
    finally:
        serve.shutdown()
        ray.shutdown()


def embedded(cfg: dict[str, Any], batch: list[dict[str, Any]]) -> tuple[dict[str, float], str]:
    """Each item's reward from the embedded engine on ``cfg``, and the pipeline version."""
    from referee.config import load_settings
    from referee.engine import RewardEngine
    from referee_client.schema import RewardRequest

    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}

    async def run() -> tuple[dict[str, float], str]:
        engine = RewardEngine(load_settings(data=cfg, environ={}))
        await engine.start()
        try:
            response = await engine.score(
                RewardRequest.model_validate({"pipeline": "both", "items": batch})
            )
        finally:
            await engine.close()
        rewards = {r.id: r.reward for r in response.results if r.reward is not None}
        return rewards, response.pipeline_version

    return asyncio.run(run())


def loaded_revisions() -> set[tuple[int, ...]]:
    """What each scorer replica holds, asked often enough to reach both."""
    handle = serve.get_deployment_handle("scorer-rm", app_name="referee")
    return {tuple(handle.revisions.remote().result()) for _ in range(30)}


def score(url: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/rewards", json={"pipeline": "both", "items": batch}, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_reload_switches_every_replica_while_requests_stream(
    cluster: tuple[str, dict[str, Any]], minilm_classifier_b: Path
) -> None:
    url, old_cfg = cluster
    new_cfg = config(minilm_classifier_b)
    batches = [items(8, f"live{r}") for r in range(40)]
    flat = [i for b in batches for i in b]
    old, old_version = embedded(old_cfg, flat)
    new, new_version = embedded(new_cfg, flat)
    assert old_version != new_version
    responses: list[dict[str, Any]] = []
    by_worker: dict[int, list[str]] = {0: [], 1: []}  # versions, in each client's order
    reload: dict[str, Any] = {}

    async def run() -> None:
        queue = list(batches)
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:

            async def worker(k: int) -> None:
                while queue:
                    batch = queue.pop(0)
                    r = await client.post("/v1/rewards", json={"pipeline": "both", "items": batch})
                    assert r.status_code == 200, r.text
                    responses.append(r.json())
                    by_worker[k].append(r.json()["pipeline_version"])
                    await asyncio.sleep(0.1)

            async def act() -> None:
                while len(responses) < 6:
                    await asyncio.sleep(0.05)
                r = await client.post("/v1/admin/scorers/rm/reload", headers=ADMIN,
                                      json={"options": {"model": str(minilm_classifier_b)}})  # fmt: skip
                assert r.status_code == 200, r.text
                reload.update(r.json(), after=len(responses))

            await asyncio.gather(act(), worker(0), worker(1))

    asyncio.run(run())
    assert reload["reloaded"] == ["rm"] and reload["pipelines"]["both"] == new_version
    assert 6 <= reload["after"] < len(batches), "the reload happened mid-stream"
    seen = set()
    for response in responses:
        version = response["pipeline_version"]
        assert version in (old_version, new_version)
        want = old if version == old_version else new
        seen.add(version)
        for result in response["results"]:  # wholly the version it names
            assert result["error"] is None, result
            assert result["reward"] == pytest.approx(want[result["id"]], abs=1e-5)
    assert seen == {old_version, new_version}
    for versions in by_worker.values():  # both ingress replicas switch at one agreed time
        switches = sum(a != b for a, b in itertools.pairwise(versions))
        assert versions[0] == old_version and switches == 1, versions
    # after the call returned, every ingress replica serves the new version
    for k in range(12):
        body = score(url, flat[8 * k : 8 * k + 8])
        assert body["pipeline_version"] == new_version
        for result in body["results"]:
            assert result["reward"] == pytest.approx(new[result["id"]], abs=1e-5)
    fingerprints = {
        s["fingerprint"]
        for _ in range(10)
        for s in httpx.get(f"{url}/v1/admin/scorers", headers=ADMIN, timeout=30).json()["scorers"]
        if s["name"] == "rm"
    }
    assert fingerprints == {reload["fingerprints"]["rm"]}
    # once retired (request_timeout_s + 1 after the switch), the old weights are unloaded
    deadline = time.monotonic() + 30
    while len(held := loaded_revisions()) != 1 or len(only := next(iter(held))) != 1:
        assert time.monotonic() < deadline, held
        time.sleep(1)
    assert only[0] > 0, "the replicas hold the new revision, not the first"


def test_a_version_that_fails_to_load_changes_nothing(
    cluster: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, _ = cluster
    batch = items(8, "fail")
    before = score(url, batch)
    missing = httpx.post(f"{url}/v1/admin/scorers/rm/reload", headers=ADMIN, timeout=120,
                         json={"options": {"model": str(tmp_path / "no-such-model")}})  # fmt: skip
    assert missing.status_code == 422 and "no-such-model" in missing.text, missing.text
    # a directory that passes the options' checks but holds no weights: every replica
    # tries to load it, fails, and the stage is dropped
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert", "num_labels": 1}')
    r = httpx.post(f"{url}/v1/admin/scorers/rm/reload", headers=ADMIN, timeout=300,
                   json={"options": {"model": str(broken)}})  # fmt: skip
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert "failed to load" in error["message"] and "nothing was changed" in error["message"]
    assert error["param"] == "scorers.rm"
    after = score(url, batch)
    assert after["pipeline_version"] == before["pipeline_version"]
    assert [x["reward"] for x in after["results"]] == [x["reward"] for x in before["results"]]
    deadline = time.monotonic() + 30  # the replicas dropped what they had staged, if anything
    while any(len(held) != 1 for held in loaded_revisions()):
        assert time.monotonic() < deadline
        time.sleep(1)


def test_a_new_rule_pipeline_reaches_every_ingress_and_a_new_model_scorer_needs_a_redeploy(
    cluster: tuple[str, dict[str, Any]], minilm_classifier_b: Path
) -> None:
    url, _ = cluster
    current = config(minilm_classifier_b)
    current["pipelines"]["fmt_only"] = {"reward": "fmt"}
    r = httpx.post(f"{url}/v1/admin/config", headers=ADMIN, json={"config": current}, timeout=120)
    assert r.status_code == 200, r.text
    assert "fmt_only" in r.json()["pipelines"] and r.json()["reloaded"] == []
    for _ in range(12):  # both ingress replicas answer it
        answer = httpx.post(f"{url}/v1/rewards", timeout=60, json={
            "pipeline": "fmt_only", "items": [{"id": "a", "prompt": "p",
                                               "response": "<think>t</think><answer>x</answer>"}]})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["reward"] == 1.0
    more = {**current, "scorers": {**current["scorers"], "rm2": current["scorers"]["rm"]}}
    r = httpx.post(f"{url}/v1/admin/config", headers=ADMIN, json={"config": more}, timeout=60)
    assert r.status_code == 422 and "redeploy" in r.json()["error"]["message"], r.text
    assert r.json()["error"]["param"] == "scorers.rm2"


def test_a_scorer_replica_started_after_a_reload_serves_the_committed_version(
    cluster: tuple[str, dict[str, Any]], minilm_classifier_b: Path
) -> None:
    url, _ = cluster
    batch = items(8, "restart")
    new, new_version = embedded(config(minilm_classifier_b), batch)
    handle = serve.get_deployment_handle("scorer-rm", app_name="referee")
    pids = sorted({handle.process_id.remote().result() for _ in range(30)})
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 120  # Serve replaces it; the new one loads from the registry
    while (
        pids[0] in (now := {handle.process_id.remote().result() for _ in range(30)})
        or len(now) != 2
    ):
        assert time.monotonic() < deadline, now
        time.sleep(1)
    for _ in range(6):
        body = score(url, batch)
        assert body["pipeline_version"] == new_version
        for result in body["results"]:
            assert result["reward"] == pytest.approx(new[result["id"]], abs=1e-5)


def test_the_sdk_reloads_over_grpc_through_rays_proxy(
    cluster: tuple[str, dict[str, Any]], minilm_classifier: Path
) -> None:
    """The admin calls over gRPC (referee.v1.RefereeAdmin) through Ray's gRPC proxy: back
    to the first head, and every replica serves it."""
    from referee_client import RewardClient

    url, cfg = cluster
    batch = items(8, "grpc")
    old, old_version = embedded(config(minilm_classifier), batch)
    with RewardClient(cfg["_grpc_url"], timeout=300, admin_key="wrong") as client:
        with pytest.raises(Exception, match=r"(?i)key"):
            client.admin.scorers()
    with RewardClient(cfg["_grpc_url"], timeout=300, admin_key="adm") as client:
        assert {s.name for s in client.admin.scorers().scorers} == {"rm", "fmt"}
        result = client.admin.reload_scorer("rm", options={"model": str(minilm_classifier)})
        assert result.reloaded == ["rm"] and result.pipelines["both"] == old_version
    for _ in range(6):
        body = score(url, batch)
        assert body["pipeline_version"] == old_version
        for r in body["results"]:
            assert r["reward"] == pytest.approx(old[r["id"]], abs=1e-5)
