"""Rule-scorer throughput through HTTP vs the same scorers called in-process, plus the
start-up time and resident memory of `referee serve` on the embedded default config.

    .venv/bin/python benchmarks/rule_throughput.py [--batches 20] [--concurrency 4]

Items are realistic math rollouts (a few hundred words of reasoning in <think>, a boxed
answer in <answer>), 256 per request, every one distinct (the cache is off on both
sides: this measures scoring, not cache hits). Two pipelines from benchmarks/rules.yaml:
`default` (format gate -> math correctness, plus DAPO's overlong penalty, as in the
embedded default) and `cheap_rules` (format, match, length, repetition: microseconds an
item, so the gateway's own cost shows). The in-process baseline calls the pipeline's
scorers' `score_batch` directly on batches of the same size, no engine, no server.
Start-up time and memory are measured on the embedded default config.
Writes benchmarks/results/rule_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from referee.config import load_settings
from referee.engine import RewardEngine
from referee.scorers.base import ScoreInput
from referee_client.schema import RewardItem

HERE = Path(__file__).parent
WORDS = ("we compute the value then substitute into the equation so that both sides "
         "agree and check the remaining case carefully before simplifying").split()  # fmt: skip


def make_items(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        answer = rng.choice([f"{a * b}", f"\\frac{{{a}}}{{{b}}}", f"{a}\\sqrt{{{b}}}", f"{a + b}"])
        reference = answer if rng.random() < 0.6 else f"{a * b + 1}"
        thinking = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 600)))
        response = f"<think>{thinking}</think><answer>The answer is $\\boxed{{{answer}}}$</answer>"
        items.append({"id": f"s{seed}-{i}", "prompt": f"Compute {a} and {b}.",
                      "response": response, "reference": reference, "group": f"g{i // 8}"})  # fmt: skip
    return items


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


CONFIG = HERE / "rules.yaml"


async def in_process(batches: list[list[dict[str, object]]], pipeline: str) -> dict[str, float]:
    settings = load_settings(CONFIG, environ={})
    engine = RewardEngine(settings)
    used = engine.pipelines[pipeline].scorers
    scorers = [engine.scorers[name] for name in used]
    for scorer in scorers:
        await scorer.setup()
    try:
        warm = [ScoreInput.from_item(RewardItem.model_validate(x)) for x in make_items(256, 99998)]
        for scorer in scorers:  # not measured: first-call imports in the math workers
            await scorer.score_batch(warm)
        latencies = []
        t0 = time.perf_counter()
        for batch in batches:
            inputs = [ScoreInput.from_item(RewardItem.model_validate(x)) for x in batch]
            t = time.perf_counter()
            for scorer in scorers:
                await scorer.score_batch(inputs)
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
    finally:
        for scorer in scorers:
            await scorer.close()
    n = sum(len(b) for b in batches)
    return {"items": n, "seconds": elapsed, "items_per_s": n / elapsed,
            "batch_p50_s": percentile(latencies, 0.5), "batch_p99_s": percentile(latencies, 0.99)}  # fmt: skip


def start_server(
    config: Path | None, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "REFEREE_CACHE__BACKEND": "none", "REFEREE_SERVER__LOG_LEVEL": "warning",
           **(env_extra or {})}  # fmt: skip
    t0 = time.perf_counter()
    extra = ["--config", str(config)] if config else []
    proc = subprocess.Popen([sys.executable, "-m", "referee.cli", "serve", "--port", str(port), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url, time.perf_counter() - t0
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up")
        time.sleep(0.02)


async def over_http(
    url: str, batches: list[list[dict[str, object]]], concurrency: int, pipeline: str
) -> dict[str, float]:
    latencies: list[float] = []
    queue: asyncio.Queue[list[dict[str, object]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    errors = 0

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                batch = queue.get_nowait()
                t = time.perf_counter()
                r = await client.post("/v1/rewards", json={"pipeline": pipeline, "items": batch,
                                                            "options": {"return_components": False}})  # fmt: skip
                latencies.append(time.perf_counter() - t)
                r.raise_for_status()
                errors += r.json()["usage"]["errors"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    n = sum(len(b) for b in batches)
    return {"items": n, "seconds": elapsed, "items_per_s": n / elapsed, "item_errors": errors,
            "request_p50_s": percentile(latencies, 0.5), "request_p99_s": percentile(latencies, 0.99)}  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    size = args.batch_size
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "batch_size": size,
        "batches": args.batches,
        "concurrency": args.concurrency,
    }
    proc, _, startup_s = start_server(None)  # the embedded default config
    try:
        time.sleep(1.0)
        result["serve_default_startup_to_ready_s"] = startup_s
        result["serve_default_rss_mb_main"] = rss_mb(proc.pid)
        result["serve_default_rss_mb_with_math_workers"] = rss_mb(proc.pid) + sum(
            rss_mb(c) for c in children(proc.pid)
        )
    finally:
        stop(proc)
    for pipeline in ("default", "cheap_rules"):
        batches = [make_items(size, seed) for seed in range(args.batches)]
        http_batches = [make_items(size, 1000 + seed) for seed in range(args.batches)]
        baseline = asyncio.run(in_process(batches, pipeline))
        proc, url, _ = start_server(CONFIG)
        try:
            asyncio.run(over_http(url, [make_items(size, 99999)], 1, pipeline))  # warm-up
            served = asyncio.run(over_http(url, http_batches, args.concurrency, pipeline))
            served["rss_mb_after_load"] = rss_mb(proc.pid)
        finally:
            stop(proc)
        result[pipeline] = {
            "in_process": baseline,
            "http": served,
            "http_over_in_process": served["items_per_s"] / baseline["items_per_s"],
        }
    out = HERE / "results" / "rule_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
