"""`referee eval` vs `referee score` on the same items: does the eval add scoring cost?

    .venv/bin/python benchmarks/eval_throughput.py [--pairs 512] [--repeats 3]

Items: preference pairs of realistic math rollouts (150-600 words of reasoning in
<think>, a boxed answer; the chosen one right, the rejected one wrong), so each pair is two
items. `score` is what `referee score` runs: the engine in this process, requests of 256
items, each result written as a JSONL line. `eval` is what `referee eval` runs on the same
items: the same engine and request size (whole pairs per request), then the report's
metrics (per component, length bias). Both on benchmarks/rules.yaml with the cache off,
score and eval runs back to back on fresh engines, alternating which goes first; engine
start-up is outside the timings. The scorers' own counters must show the same items
computed in both modes (the run stops otherwise).
Writes benchmarks/results/eval_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from referee.config import load_settings
from referee.engine import RewardEngine
from referee.eval import EngineSource, evaluate, load_eval_data, run_eval
from referee.metrics import Metrics
from referee_client.schema import RewardItem, RewardRequest

HERE = Path(__file__).parent
WORDS = ("we compute the value then substitute into the equation so that both sides "
         "agree and check the remaining case carefully before simplifying").split()  # fmt: skip


def make_pairs(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        a, b = rng.randint(2, 999), rng.randint(2, 999)

        def rollout(answer: int) -> str:
            thinking = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 600)))
            return f"<think>{thinking}</think><answer>The answer is $\\boxed{{{answer}}}$</answer>"

        pairs.append({"id": f"p{i}", "prompt": f"Compute {a} * {b}.", "reference": str(a * b),
                      "chosen": rollout(a * b), "rejected": rollout(a * b + 1)})  # fmt: skip
    return pairs


def scorer_items(metrics: Metrics) -> dict[str, float]:
    """Items each scorer computed: the sum of its batch sizes."""
    out = {}
    for family in metrics.registry.collect():
        if family.name == "referee_batch_size":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    if sample.value:
                        out[sample.labels["scorer"]] = sample.value
    return out


async def score_like_cli(settings_path: Path, pipeline: str, items: list[RewardItem],
                         out: Path, chunk: int = 256) -> float:  # fmt: skip
    """The loop of `referee score` (cli.py): chunks through the engine, JSONL out."""
    engine = RewardEngine(load_settings(settings_path))
    engine.pipeline(pipeline)
    await engine.start()
    try:
        started = time.perf_counter()
        with out.open("w", encoding="utf-8") as sink:
            for start in range(0, len(items), chunk):
                request = RewardRequest(pipeline=pipeline, items=items[start : start + chunk])
                response = await engine.score(request, enforce_limits=False)
                for result in response.results:
                    sink.write(result.model_dump_json() + "\n")
        return time.perf_counter() - started, scorer_items(engine.metrics)
    finally:
        await engine.close()


async def eval_like_cli(
    settings_path: Path, pipeline: str, data_path: Path
) -> tuple[float, float, dict[str, float]]:
    """`referee eval`: load, score (same engine, same request size), measure. Returns the
    scoring time, the time including the metrics, and the items each scorer computed."""
    data = load_eval_data(data_path)
    source = EngineSource(load_settings(settings_path), pipeline)
    run = await run_eval(data, source, chunk_items=256, progress=False)
    started = time.perf_counter()
    evaluate(run)
    total = run.elapsed_s + (time.perf_counter() - started)
    return run.elapsed_s, total, scorer_items(source.engine.metrics)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipelines", default="default,cheap_rules")
    args = parser.parse_args()
    os.environ["REFEREE_CACHE__BACKEND"] = "none"  # every item scored, in both modes
    config = HERE / "rules.yaml"
    pairs = make_pairs(args.pairs, seed=1)
    items = [
        RewardItem(
            id=f"{p['id']}/{side}",
            prompt=p["prompt"],
            response=p[side],
            reference=p["reference"],
            group=p["id"],
        )
        for p in pairs
        for side in ("chosen", "rejected")
    ]
    n = len(items)
    load_at_start = os.getloadavg()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "pairs.jsonl"
        data_path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        for pipeline in args.pipelines.split(","):
            score_s, eval_s, eval_all_s, ratios = [], [], [], []
            computed: dict[str, dict[str, float]] = {}
            for k in range(args.repeats):  # back to back, alternating which goes first
                if k % 2:
                    scored, total, computed["eval"] = asyncio.run(
                        eval_like_cli(config, pipeline, data_path)
                    )
                seconds, computed["score"] = asyncio.run(
                    score_like_cli(config, pipeline, items, Path(tmp) / "o")
                )
                if not k % 2:
                    scored, total, computed["eval"] = asyncio.run(
                        eval_like_cli(config, pipeline, data_path)
                    )
                score_s.append(seconds)
                eval_s.append(scored)
                eval_all_s.append(total)
                ratios.append(seconds / scored)  # eval items/s over score items/s, this pair
            if computed["score"] != computed["eval"]:
                raise SystemExit(f"the scorers computed different work: {computed}")
            row: dict[str, object] = {
                "items": n,
                "scorer_items_per_run": computed["eval"],  # the same in both modes (checked)
                "score_items_per_s": [n / s for s in score_s],
                "eval_items_per_s": [n / s for s in eval_s],
                "eval_with_metrics_items_per_s": [n / s for s in eval_all_s],
                "eval_over_score_per_pair": ratios,
            }
            med = {k: statistics.median(v) for k, v in row.items() if isinstance(v, list)}
            row["median"] = med
            print(f"{pipeline}: score {med['score_items_per_s']:.0f} items/s, eval "
                  f"{med['eval_items_per_s']:.0f} items/s, with metrics "
                  f"{med['eval_with_metrics_items_per_s']:.0f} items/s; eval/score per "
                  f"back-to-back pair {[round(r, 2) for r in ratios]} (median "
                  f"{med['eval_over_score_per_pair']:.2f}); scorer items per run "
                  f"{computed['eval']}", flush=True)  # fmt: skip
            results[pipeline] = row
    record = {
        "command": f"benchmarks/eval_throughput.py --pairs {args.pairs} --repeats {args.repeats}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start_and_end": [load_at_start, os.getloadavg()],
        "results": results,
    }
    out = HERE / "results" / "eval_throughput.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
