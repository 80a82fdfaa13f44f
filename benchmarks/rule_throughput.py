"""Rule-scorer throughput through HTTP vs a careful in-process script over the same
scorers, plus the start-up time and resident memory of `referee serve` on the embedded
default config.

    .venv/bin/python benchmarks/rule_throughput.py [--batches 16] [--concurrency 4] [--runs 3]

Items are realistic math rollouts (a few hundred words of reasoning in <think>, a boxed
answer in <answer>), 256 per request, every one distinct within a run (the cache is off
on both sides: this measures scoring, not cache hits). Two pipelines from
benchmarks/rules.yaml: `default` (format gate -> math correctness, plus DAPO's overlong
penalty, as in the embedded default) and `cheap_rules` (format, match, length,
repetition: microseconds an item, so the gateway's own cost shows).

The baseline is what a careful script does with the same scorer objects, no engine and
no server: the same batches of the same items, `--concurrency` batches in flight (so the
math worker processes are kept as busy as the server keeps them), a batch's independent
scorers at once, math only for the items that pass the format gate, and the same reward
arithmetic; its rewards are checked equal to the server's. The script and HTTP runs
alternate (script, HTTP, script, HTTP, ...), `--runs` of each, each HTTP run against the
same warm server; every ratio is reported as the median of the per-pair ratios with
their range. Writes benchmarks/results/rule_throughput.json.
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
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from referee.config import load_settings
from referee.engine import RewardEngine
from referee.scorers.base import ScoreInput, ScoreResult
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


Batch = list[dict[str, object]]


class CarefulScript:
    """The pipelines of benchmarks/rules.yaml computed by hand over the scorer objects."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        engine = RewardEngine(load_settings(CONFIG, environ={}))
        names = engine.pipelines[pipeline].scorers
        self.scorers = {name: engine.scorers[name] for name in names}

    async def __aenter__(self) -> CarefulScript:
        for scorer in self.scorers.values():
            await scorer.setup()
        await self.rewards(make_items(256, 99998))  # not measured: first-call imports
        return self

    async def __aexit__(self, *exc: object) -> None:
        for scorer in self.scorers.values():
            await scorer.close()

    async def rewards(self, batch: Batch) -> list[float]:
        inputs = [ScoreInput.from_item(RewardItem.model_validate(x)) for x in batch]
        s = self.scorers
        if self.pipeline == "cheap_rules":
            names = ("think_format", "answer_match", "overlong", "repetition")
            scored = await asyncio.gather(*(s[n].score_batch(inputs) for n in names))
            return [sum(_value(r) for r in row) / len(row) for row in zip(*scored, strict=True)]
        assert self.pipeline == "default"
        fmt, over = await asyncio.gather(
            s["think_format"].score_batch(inputs), s["overlong"].score_batch(inputs)
        )
        passing = [i for i, r in enumerate(fmt) if _value(r) >= 1.0]
        checked = await s["math"].score_batch([inputs[i] for i in passing])
        correct = dict(zip(passing, (_value(r) for r in checked), strict=True))
        return [correct.get(i, 0.0) + _value(over[i]) for i in range(len(inputs))]

    async def run(self, batches: list[Batch], concurrency: int) -> dict[str, Any]:
        latencies: list[float] = []
        rewards: dict[str, float] = {}
        queue = list(reversed(batches))

        async def worker() -> None:
            while queue:
                batch = queue.pop()
                t = time.perf_counter()
                values = await self.rewards(batch)
                latencies.append(time.perf_counter() - t)
                rewards.update((str(x["id"]), v) for x, v in zip(batch, values, strict=True))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        n = sum(len(b) for b in batches)
        return {"items": n, "seconds": elapsed, "items_per_s": n / elapsed,
                "batch_p50_s": percentile(latencies, 0.5),
                "batch_p99_s": percentile(latencies, 0.99), "rewards": rewards}  # fmt: skip


def _value(result: ScoreResult) -> float:
    if result.value is None:
        raise RuntimeError(f"an item failed in the script: {result.error}")
    return float(result.value)


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
    url: str, batches: list[Batch], concurrency: int, pipeline: str
) -> dict[str, Any]:
    latencies: list[float] = []
    queue: asyncio.Queue[list[dict[str, object]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    errors = 0
    rewards: dict[str, float] = {}

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
                body = r.json()
                errors += body["usage"]["errors"]
                rewards.update((x["id"], x["reward"]) for x in body["results"])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    n = sum(len(b) for b in batches)
    return {"items": n, "seconds": elapsed, "items_per_s": n / elapsed, "item_errors": errors,
            "request_p50_s": percentile(latencies, 0.5), "request_p99_s": percentile(latencies, 0.99),
            "rewards": rewards}  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def compare(pipeline: str, args: argparse.Namespace) -> dict[str, Any]:
    """`args.runs` script runs and HTTP runs, alternating, on the same batches."""
    batches = [make_items(args.batch_size, seed) for seed in range(args.batches)]
    env = {"REFEREE_SERVER__WORKERS": str(args.workers)} if args.workers > 1 else None
    proc, url, _ = start_server(CONFIG, env)
    runs: list[dict[str, Any]] = []
    try:
        await over_http(url, [make_items(args.batch_size, 99999)], 1, pipeline)  # warm-up
        async with CarefulScript(pipeline) as script:
            for _ in range(args.runs):
                baseline = await script.run(batches, args.concurrency)
                served = await over_http(url, batches, args.concurrency, pipeline)
                served["rss_mb_after_load"] = rss_mb(proc.pid)
                assert served["rewards"].keys() == baseline["rewards"].keys()
                for key, want in baseline["rewards"].items():  # the same work, both sides
                    assert abs(served["rewards"][key] - want) < 1e-9, (key, want)
                del baseline["rewards"], served["rewards"]
                ratio = served["items_per_s"] / baseline["items_per_s"]
                runs.append({"script": baseline, "http": served, "http_over_script": ratio})
    finally:
        stop(proc)
    return {
        "script_items_per_s": spread([r["script"]["items_per_s"] for r in runs]),
        "http_items_per_s": spread([r["http"]["items_per_s"] for r in runs]),
        "http_over_script": spread([r["http_over_script"] for r in runs]),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of each side")
    parser.add_argument("--pipelines", default="default,cheap_rules")
    parser.add_argument("--workers", type=int, default=1, help="gateway processes (server.workers)")
    parser.add_argument("--skip-startup", action="store_true",
                        help="skip the start-up and memory measurement of the default config")  # fmt: skip
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs: at least 3 (a ratio needs its spread)")
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "batch_size": args.batch_size,
        "batches": args.batches,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "workers": args.workers,
        "load_avg_before": os.getloadavg(),
    }
    if not args.skip_startup:
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
    for pipeline in args.pipelines.split(","):
        result[pipeline] = asyncio.run(compare(pipeline, args))
    result["load_avg_after"] = os.getloadavg()
    out = HERE / "results" / "rule_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
