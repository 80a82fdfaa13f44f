"""Referee on a local Ray Serve cluster on this CPU machine: one model-scorer deployment
with 2 replicas plus the ingress. Rewards over Ray's HTTP proxy equal the embedded
engine's exactly, and killing a scorer replica's process while it has a batch in flight
loses no item, answers none twice, and is seen to retry the batch. For that kill, a
pairwise judge deployment (2 replicas) calls a stand-in judge server
(tests/e2e/marker_judge_server.py, a stand-in for a judge model: its verdicts follow a
marker in the responses) that can hold calls unanswered, so the test knows which replica
has a batch in flight when it kills it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.marker_judge_server import serving

ray = pytest.importorskip("ray", reason="distributed mode needs the ray extra")
serve = pytest.importorskip("ray.serve")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(model: Path, judge_url: str) -> dict[str, Any]:
    judge = {
        "model": "stand-in",
        "backend": "openai",
        "template": "pairwise",
        "group_mode": "pairwise",
        "endpoint": {"base_url": f"{judge_url}/v1"},
    }
    return {
        "scorers": {
            "rm": {"kind": "classifier", "options": {"model": str(model), "input": "pair"}},
            "fmt": {"kind": "format", "options": {"mode": "think_answer"}},
            "pj": {"kind": "judge", "options": judge},
        },
        "pipelines": {
            "both": {"reward": {"type": "weighted_sum", "weights": [1.0, 0.5],
                                "inputs": ["rm", "fmt"]}},
            "judged": {"reward": "pj"},
        },
        "cache": {"backend": "none"},
        "server": {"admin_api_keys": ["adm"]},
    }  # fmt: skip


# 2 replicas of each model scorer; the judge's only wait on the stand-in (no CPU of their own)
DEPLOYMENTS = {"rm": {"num_replicas": 2},
               "pj": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0}}}  # fmt: skip


def items(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"id": f"{tag}-{i}", "prompt": f"question {i % 7}",
             "response": ("<think>ok</think><answer>x</answer> " if i % 3 else "") + "word " * (1 + i % 40)}
            for i in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def judge_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The stand-in judge's URL and the file that, while it exists, holds its answers."""
    gate = tmp_path_factory.mktemp("judge") / "hold"
    with serving("--hold-while", str(gate)) as url:
        yield url, gate


@pytest.fixture(scope="module")
def cluster(
    minilm_classifier: Path, judge_gate: tuple[str, Path]
) -> Iterator[tuple[str, dict[str, Any]]]:
    from referee.ray import build_app
    from referee.ray._grpc import GRPC_SERVICER_FUNCTIONS

    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    cfg = config(minilm_classifier, judge_gate[0])
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=metrics_port,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})  # fmt: skip
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port},
                    grpc_options={"port": grpc_port,
                                  "grpc_servicer_functions": GRPC_SERVICER_FUNCTIONS})  # fmt: skip
        app = build_app({"config": cfg, "scorers": DEPLOYMENTS})
        serve.run(app, name="referee", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "Ray Serve app not ready in 120 s"
            time.sleep(0.5)
        cfg["_grpc_url"] = f"grpc://127.0.0.1:{grpc_port}"
        cfg["_judge_url"] = judge_gate[0]
        cfg["_metrics_url"] = f"http://127.0.0.1:{metrics_port}/metrics"
        yield url, cfg
    finally:
        serve.shutdown()
        ray.shutdown()


def embedded_rewards(cfg: dict[str, Any], batch: list[dict[str, Any]]) -> dict[str, float]:
    from referee.config import load_settings

    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    from referee.engine import RewardEngine
    from referee_client.schema import RewardRequest

    async def run() -> dict[str, float]:
        engine = RewardEngine(load_settings(data=cfg, environ={}))
        await engine.start()
        try:
            response = await engine.score(
                RewardRequest.model_validate({"pipeline": "both", "items": batch})
            )
        finally:
            await engine.close()
        return {r.id: r.reward for r in response.results if r.reward is not None}

    return asyncio.run(run())


def test_rewards_over_ray_serve_equal_the_embedded_engine(
    cluster: tuple[str, dict[str, Any]],
) -> None:
    from referee_client import RewardClient

    url, cfg = cluster
    batch = items(24, "eq")
    with RewardClient(url, timeout=120) as client:  # the SDK over Ray's HTTP proxy
        served = {r.id: r.reward for r in client.score(batch, pipeline="both").results}
    assert list(served) == [i["id"] for i in batch]
    expected = embedded_rewards(cfg, batch)
    assert len(expected) == len(batch)
    for key, value in expected.items():
        assert served[key] == pytest.approx(value, abs=1e-5)
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["scorers"]["rm"] == {"ready": True, "deployment": "scorer-rm", "revision": 0}


def test_grpc_through_rays_proxy_gives_the_same_rewards_with_the_sdk(
    cluster: tuple[str, dict[str, Any]],
) -> None:
    from referee_client import RewardClient

    _, cfg = cluster
    batch = items(16, "grpc")
    expected = embedded_rewards(cfg, batch)
    with RewardClient(cfg["_grpc_url"], timeout=120) as client:
        results = client.score(batch, pipeline="both").results
        assert [r.id for r in results] == [i["id"] for i in batch]
        for result in results:
            assert result.reward == pytest.approx(expected[result.id], abs=1e-5)
        with client.stream(pipeline="both") as stream:
            stream.send(batch[:8])
            stream.send(batch[8:])
            stream.close_send()
            streamed = {r.id: r.reward for r in stream}
        assert streamed == pytest.approx(expected, abs=1e-5)
        with pytest.raises(Exception, match="unknown pipeline"):
            client.score(batch[:1], pipeline="nope")


def test_scorer_replica_metrics_reach_rays_prometheus_endpoint(
    cluster: tuple[str, dict[str, Any]],
) -> None:
    """The batcher metrics of the scorer replicas (batch size, padded tokens, padding
    efficiency, compute time), as Prometheus scrapes them from the node's metrics port."""
    url, cfg = cluster
    response = httpx.post(f"{url}/v1/rewards", json={"pipeline": "both", "items": items(32, "m")},
                          timeout=120)  # fmt: skip
    assert response.status_code == 200
    deadline = time.monotonic() + 90
    while True:
        text = httpx.get(cfg["_metrics_url"], timeout=10).text
        lines = [line for line in text.splitlines() if line.startswith("ray_referee_batch_size")]
        if any('scorer="rm"' in line and "replica=" in line for line in lines):
            break
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(2)
    for family in ("ray_referee_batch_tokens", "ray_referee_batch_padding_efficiency",
                   "ray_referee_scorer_compute_seconds"):  # fmt: skip
        assert family in text


def scorer_replica_pids(scorer: str = "rm") -> list[int]:
    """The processes of the scorer's replicas, found by asking the deployment (the handle
    routes each call to either replica)."""
    handle = serve.get_deployment_handle(f"scorer-{scorer}", app_name="referee")
    pids = {handle.process_id.remote().result() for _ in range(40)}
    return sorted(pids)


async def stream_while(
    url: str,
    batches: list[list[dict[str, Any]]],
    *,
    workers: int,
    after: int,
    action: Callable[[int], Awaitable[None]],
    pause_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Send ``batches`` from ``workers`` concurrent clients (every request must be 200) and
    run ``action(results so far)`` once ``after`` results have come back; returns every
    result received."""
    received: list[dict[str, Any]] = []
    queue = list(batches)
    async with httpx.AsyncClient(base_url=url, timeout=180) as client:

        async def worker() -> None:
            while queue:
                batch = queue.pop(0)
                r = await client.post("/v1/rewards", json={"pipeline": "both", "items": batch})
                assert r.status_code == 200, r.text
                received.extend(r.json()["results"])
                await asyncio.sleep(pause_s)

        async def act() -> None:
            while len(received) < after:  # the stream is running
                await asyncio.sleep(0.05)
            await action(len(received))

        await asyncio.gather(act(), *(worker() for _ in range(workers)))
    return received


def retries_counted(url: str, scorer: str) -> float:
    """The ingress's count of batches it sent again to `scorer`'s deployment."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    name = f'referee_scorer_call_retries_total{{scorer="{scorer}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))  # fmt: skip


def local_tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP sockets process `pid` has open (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def replica_with_a_call_in_flight(judge_url: str, pids: list[int]) -> int:
    """The replica whose call the stand-in judge is holding: the process that owns the
    client end of a held connection."""
    deadline = time.monotonic() + 60
    while not (ports := httpx.get(f"{judge_url}/held", timeout=10).json()["ports"]):
        assert time.monotonic() < deadline, "no judge call reached the stand-in"
        time.sleep(0.05)
    for pid in pids:
        if local_tcp_ports(pid) & set(ports):
            return pid
    raise AssertionError(f"no replica of {pids} owns a held connection {ports}")


def test_killing_a_replica_with_a_batch_in_flight_retries_it_and_answers_each_item_once(
    cluster: tuple[str, dict[str, Any]], judge_gate: tuple[str, Path]
) -> None:
    url, _ = cluster
    judge_url, gate = judge_gate
    pids = scorer_replica_pids("pj")
    assert len(pids) == 2, pids
    # 6 groups of 2: each item's pairwise win rate against its one peer, both orders
    batch = [{"id": f"g{g}-{k}", "prompt": "Which is best?", "group": f"g{g}",
              "response": f"answer {g}{k} (quality {k})"} for g in range(6) for k in (0, 1)]  # fmt: skip
    before = retries_counted(url, "pj")
    gate.touch()  # the stand-in holds every call until the gate goes
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            sent = pool.submit(httpx.post, f"{url}/v1/rewards", timeout=120,
                               json={"pipeline": "judged", "items": batch})  # fmt: skip
            victim = replica_with_a_call_in_flight(judge_url, pids)
            os.kill(victim, signal.SIGKILL)  # mid-batch: its call is held, unanswered
            time.sleep(0.5)
            gate.unlink()  # the retried batch is answered by the other replica
            response = sent.result()
    finally:
        gate.unlink(missing_ok=True)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == [i["id"] for i in batch]  # each once, in order
    assert all(r["error"] is None for r in results), results
    better = 1 / (1 + math.exp(-1))  # the stand-in's P(the better one wins): quality 1 vs 0
    for item, result in zip(batch, results, strict=True):
        want = better if item["id"].endswith("-1") else 1 - better
        assert result["reward"] == pytest.approx(want, abs=1e-9), item["id"]
    assert retries_counted(url, "pj") >= before + 1  # the failed call was sent again
    deadline = time.monotonic() + 60  # Serve replaces the dead replica
    while victim in (now := scorer_replica_pids("pj")) or len(now) != 2:
        assert time.monotonic() < deadline, now
        time.sleep(1)


def test_rolling_a_new_model_revision_drops_no_request(
    cluster: tuple[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A config change (new weights for `rm`) redeploys the app while requests stream:
    every request is answered 200, each reward is the old model's or the new one's."""
    from referee.ray import build_app
    from tests.models import save_minilm_head

    url, old_cfg = cluster
    new_model = save_minilm_head(tmp_path_factory.mktemp("rm-v2"), "sequence", num_labels=1, seed=7)
    # The new config leaves the judge out, so only `rm` and the ingress are redeployed (a
    # new ingress replica takes traffic only once its engine has started).
    new_cfg = config(new_model, old_cfg["_judge_url"])
    del new_cfg["scorers"]["pj"], new_cfg["pipelines"]["judged"]
    batches = [items(8, f"roll{r}") for r in range(30)]
    flat = [i for b in batches for i in b]
    old, new = embedded_rewards(old_cfg, flat), embedded_rewards(new_cfg, flat)

    async def roll(_: int) -> None:
        app = build_app({"config": new_cfg, "scorers": {"rm": DEPLOYMENTS["rm"]}})
        await asyncio.to_thread(serve.run, app, name="referee", route_prefix="/")

    received = asyncio.run(
        stream_while(url, batches, workers=2, after=16, action=roll, pause_s=0.2)
    )
    assert all(result["error"] is None for result in received), received
    answers = {result["id"]: result["reward"] for result in received}
    assert len(answers) == len(received)
    assert sorted(answers) == sorted(old)
    for key, value in answers.items():
        assert value == pytest.approx(old[key], abs=1e-5) or value == pytest.approx(
            new[key], abs=1e-5
        )
    after = httpx.post(
        f"{url}/v1/rewards", json={"pipeline": "both", "items": flat[:8]}, timeout=60
    )
    assert [r["reward"] for r in after.json()["results"]] == pytest.approx(
        [new[i["id"]] for i in flat[:8]], abs=1e-5
    )
