"""Group assembly: rollouts sent one per request (as OpenRLHF 0.11 and verl 0.9 send them)
against each group sent whole in one request.

    .venv/bin/python benchmarks/group_assembly.py [--groups 64] [--group-size 8] [--window 16]

One `referee serve` (benchmarks/groups.yaml: math gated by format, overlong, GRPO group
normalisation; cache off), the same items in every mode, every item distinct per mode.

- whole: one POST /v1/rewards per group (G items), `window` requests in flight.
- openrlhf-0.11: one POST /openrlhf/grpo?group_size=G per rollout, as OpenRLHF 0.11's
  SingleTurnAgentExecutor sends it (`{"query": [prompt+response], "prompts": [prompt],
  "labels": [label]}`); `window` groups generate at once and their rollouts are posted
  interleaved, each as soon as it is "generated" (a fresh group starts when one is done).
- openrlhf-0.11, no group steps (control): the same per-rollout POSTs to a pipeline with
  the same reward but no group normalisation, so nothing is assembled: what per-rollout
  requests cost by themselves.
- verl-0.9: every rollout is one `await compute_score_async(...)` (the adapter verl 0.9's
  reward loop calls; `reward_kwargs` pipeline and group_size), all awaited at once as one
  reward-loop worker awaits its share of the batch; the adapter micro-batches them.

- engine: whole groups / one item per call, assembled: the same through RewardEngine in
  this process (no HTTP), all calls at once: the cost of assembly by itself.

Reported: items/s over the whole run; per-item latency (send -> answer) p50/p99; and for
the per-item modes the latency after a group's last rollout was sent (answer of the last
rollout - its send time), which is what assembly adds on top of scoring a whole group,
to compare with the whole-group request latency.
Writes benchmarks/results/group_assembly.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402

from rule_throughput import WORDS, percentile, start_server, stop  # noqa: E402

CONFIG = HERE / "groups.yaml"
PIPELINE = "grpo"


def make_groups(n: int, size: int, seed: int) -> list[list[dict[str, str]]]:
    """n prompts, `size` rollouts each (right and wrong answers, 150-600 words of thought)."""
    rng = random.Random(seed)
    groups = []
    for g in range(n):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        prompt = f"[{seed}-{g}] Compute {a} times {b}. "
        rollouts = []
        for _ in range(size):
            answer = rng.choice([f"{a * b}", f"{a * b + 1}", f"{a + b}"])
            thinking = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 600)))
            rollouts.append({"prompt": prompt, "reference": f"{a * b}", "response":
                             f"<think>{thinking}</think><answer>$\\boxed{{{answer}}}$</answer>"})  # fmt: skip
        groups.append(rollouts)
    return groups


def summary(n: int, elapsed: float, latencies: list[float],
            after_last: list[float] | None = None) -> dict[str, float]:  # fmt: skip
    out = {"items": n, "seconds": round(elapsed, 3), "items_per_s": round(n / elapsed, 1),
           "latency_p50_s": round(percentile(latencies, 0.5), 4),
           "latency_p99_s": round(percentile(latencies, 0.99), 4)}  # fmt: skip
    if after_last:
        out["after_last_rollout_p50_s"] = round(percentile(after_last, 0.5), 4)
        out["after_last_rollout_p99_s"] = round(percentile(after_last, 0.99), 4)
    return out


async def whole(url: str, groups: list[list[dict[str, str]]], window: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = list(enumerate(groups))
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def worker() -> None:
            while queue:
                g, rollouts = queue.pop()
                items = [{**r, "id": str(i), "group": f"w{g}"} for i, r in enumerate(rollouts)]
                t = time.perf_counter()
                r = await client.post("/v1/rewards", json={"pipeline": PIPELINE, "items": items})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(window)))
        elapsed = time.perf_counter() - t0
    return summary(sum(map(len, groups)), elapsed, latencies)


async def openrlhf(url: str, groups: list[list[dict[str, str]]], window: int,
                   pipeline: str = PIPELINE) -> dict[str, float]:  # fmt: skip
    size = len(groups[0])
    latencies: list[float] = []
    after_last: list[float] = []
    rng = random.Random(1)
    # OpenRLHF opens a new aiohttp session per POST: no connection is reused.
    limits = httpx.Limits(max_connections=window * size, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def post(rollout: dict[str, str]) -> tuple[float, float]:
            body = {"query": [rollout["prompt"] + rollout["response"]],
                    "prompts": [rollout["prompt"]], "labels": [rollout["reference"]]}  # fmt: skip
            t = time.perf_counter()
            r = await client.post(f"/openrlhf/{pipeline}?group_size={size}", json=body)
            r.raise_for_status()
            assert len(r.json()["rewards"]) == 1
            return t, time.perf_counter()

        async def group(rollouts: list[dict[str, str]]) -> None:
            tasks = []
            for rollout in rollouts:  # rollouts finish generating one after another
                tasks.append(asyncio.ensure_future(post(rollout)))
                await asyncio.sleep(rng.uniform(0, 0.002))
            times = await asyncio.gather(*tasks)
            latencies.extend(done - sent for sent, done in times)
            last_sent = max(sent for sent, _ in times)
            after_last.append(max(done for _, done in times) - last_sent)

        queue = list(groups)

        async def slot() -> None:
            while queue:
                await group(queue.pop())

        t0 = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(window)))
        elapsed = time.perf_counter() - t0
    return summary(sum(map(len, groups)), elapsed, latencies, after_last)


async def verl(url: str, groups: list[list[dict[str, str]]]) -> dict[str, float]:
    os.environ["REFEREE_URL"] = url
    from referee_client.adapters import verl as adapter

    latencies: list[float] = []
    kwargs = {"pipeline": PIPELINE, "group_size": len(groups[0])}

    async def one(g: int, rollout: dict[str, str]) -> None:
        t = time.perf_counter()
        await adapter.compute_score_async(
            data_source="bench", solution_str=rollout["response"],
            ground_truth=rollout["reference"], extra_info={"uid": f"v{g}"}, **kwargs,
        )  # fmt: skip
        latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(g, r) for g, rollouts in enumerate(groups) for r in rollouts))
    elapsed = time.perf_counter() - t0
    return summary(sum(map(len, groups)), elapsed, latencies)


async def in_process(groups: list[list[dict[str, str]]], per_item: bool) -> dict[str, float]:
    """The engine alone (no HTTP): what assembling costs, free of per-request costs."""
    from referee.config import load_settings
    from referee.engine import RewardEngine
    from referee_client.schema import RewardRequest

    engine = RewardEngine(load_settings(CONFIG, environ={"REFEREE_CACHE__BACKEND": "none"}))
    await engine.start()
    latencies: list[float] = []

    async def send(items: list[dict[str, str]], options: dict[str, int]) -> None:
        request = RewardRequest.model_validate(
            {"pipeline": PIPELINE, "items": items, "options": options}
        )
        t = time.perf_counter()
        await engine.score(request)
        latencies.append(time.perf_counter() - t)

    size = len(groups[0])
    calls = []
    for g, rollouts in enumerate(groups):
        items = [{**r, "id": str(i), "group": f"e{g}"} for i, r in enumerate(rollouts)]
        if per_item:
            calls += [send([x], {"group_size": size}) for x in items]
        else:
            calls.append(send(items, {}))
    t0 = time.perf_counter()
    await asyncio.gather(*calls)
    elapsed = time.perf_counter() - t0
    await engine.close()
    return summary(sum(map(len, groups)), elapsed, latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--window", type=int, default=16, help="groups in flight at once")
    args = parser.parse_args()
    proc, url, _ = start_server(CONFIG)
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "groups": args.groups, "group_size": args.group_size, "window": args.window,
        "modes": {},
    }  # fmt: skip
    modes: dict[str, dict[str, float]] = {}
    try:
        warm = make_groups(4, args.group_size, seed=99)
        asyncio.run(whole(url, warm, 4))
        modes["whole"] = asyncio.run(whole(url, make_groups(args.groups, args.group_size, 1),
                                           args.window))  # fmt: skip
        modes["openrlhf-0.11"] = asyncio.run(
            openrlhf(url, make_groups(args.groups, args.group_size, 2), args.window)
        )
        modes["openrlhf-0.11, no group steps (control)"] = asyncio.run(
            openrlhf(url, make_groups(args.groups, args.group_size, 4), args.window, "raw")
        )
        modes["verl-0.9"] = asyncio.run(verl(url, make_groups(args.groups, args.group_size, 3)))
        modes["engine: whole groups"] = asyncio.run(
            in_process(make_groups(args.groups, args.group_size, 5), per_item=False)
        )
        modes["engine: one item per call, assembled"] = asyncio.run(
            in_process(make_groups(args.groups, args.group_size, 6), per_item=True)
        )
        metrics = httpx.get(f"{url}/metrics").text
        result["groups_assembled"] = [line for line in metrics.splitlines()
                                      if line.startswith("referee_groups_total")]  # fmt: skip
    finally:
        stop(proc)
    result["modes"] = modes
    print(json.dumps(result, indent=2))
    out = HERE / "results" / "group_assembly.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
