"""Group assembly in Ray mode: two ingress replicas, one group owner. A group's rollouts,
sent one per request over Ray's HTTP proxy (and so spread over both ingress replicas),
get the rewards of the whole group sent in one request."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray", reason="distributed mode needs the ray extra")
serve = pytest.importorskip("ray.serve")

pytestmark = pytest.mark.slow

CONFIG: dict[str, Any] = {
    "scorers": {"match": {"kind": "match", "options": {"mode": "normalized"}},
                "fmt": {"kind": "format", "options": {"mode": "think_answer"}}},
    "pipelines": {"grpo": {"reward": {"type": "weighted_sum", "weights": [1.0, 0.5],
                                      "inputs": ["match", "fmt"],
                                      "transforms": [{"type": "group_norm"}]}}},
    "cache": {"backend": "none"},
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    from referee.ray import build_app

    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app({"config": CONFIG, "ingress": {"num_replicas": 2}})
        serve.run(app, name="referee", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "Ray Serve app not ready in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def rollouts(group: str) -> list[dict[str, Any]]:
    answers = ["42", "<think>t</think><answer>42</answer>", "41", "7", "42", "x"]
    return [{"id": f"{group}-{i}", "prompt": "q", "response": a, "reference": "42",
             "group": group} for i, a in enumerate(answers)]  # fmt: skip


def test_per_item_requests_over_two_ingress_replicas_get_whole_group_rewards(
    cluster: str,
) -> None:
    async def run() -> tuple[list[float], list[float]]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=cluster, timeout=60, limits=limits) as client:

            async def one(item: dict[str, Any]) -> float:
                body = {"pipeline": "grpo", "items": [item], "options": {"group_size": 6}}
                r = await client.post("/v1/rewards", json=body)
                r.raise_for_status()
                return float(r.json()["results"][0]["reward"])

            groups = [rollouts(f"g{k}") for k in range(4)]
            parts = await asyncio.gather(*(one(x) for g in groups for x in g))
            whole = []
            for k, g in enumerate(groups):
                body = {"pipeline": "grpo", "items": [{**x, "group": f"w{k}"} for x in g]}
                r = await client.post("/v1/rewards", json=body)
                whole += [float(x["reward"]) for x in r.json()["results"]]
        return list(parts), whole

    parts, whole = asyncio.run(run())
    assert parts == pytest.approx(whole, abs=1e-6)
    assert parts[0] > 0 > parts[2]  # normalised within each group, not groups of one
    status = serve.status().applications["referee"].deployments
    assert status["ingress"].status == "HEALTHY" and "groups" in status
