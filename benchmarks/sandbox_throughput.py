"""The sandbox's cost: sandboxed runs/s of a trivial Python solution with 3 stdin cases
through the code scorer, against a plain ``subprocess.run`` loop without isolation running
the same program on the same inputs; the per-run start-up overhead; SQL items/s.

    .venv/bin/python benchmarks/sandbox_throughput.py [--items 30] [--rounds 3]

- code: ``CodeScorer.score_batch`` (bubblewrap, limits, comparison) over ``--items``
  items x 3 cases, at ``max_concurrency`` 1 and at the number of cores; the plain loop
  runs ``python3 -I main.py`` with ``subprocess.run`` serially, and in a thread pool of
  the same size. Rounds alternate sandbox and plain, so load from other users of the
  machine falls on both; the medians are recorded.
- start-up: median wall time of running ``/bin/true`` in a sandbox made on the spot
  (bwrap, and the launcher for the uid drop and the limits), and in one made ahead (as
  the code scorer's runs take them), minus a plain ``subprocess.run(["/bin/true"])``.
- sql: ``SqlScorer.score_batch`` over Spider-style items (a gold and a predicted query
  each, on a 1,000-row table), ``max_concurrency`` 4.

Writes benchmarks/results/sandbox_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT / "clients"))

from referee.scorers.base import ScoreInput  # noqa: E402
from referee.scorers.execution._launcher import launcher  # noqa: E402
from referee.scorers.execution.code import CodeScorer  # noqa: E402
from referee.scorers.execution.sandbox import RUN_ENV, Limits, Sandbox  # noqa: E402
from referee.scorers.execution.sql import SqlScorer  # noqa: E402

# The interpreter the sandbox finds on its PATH, so both sides run the same python3.
PYTHON = shutil.which("python3", path=RUN_ENV["PATH"]) or "python3"
SOLUTION = "a, b = map(int, input().split())\nprint(a + b)\n"
CASES = {"inputs": ["1 2\n", "30 40\n", "500 600\n"], "outputs": ["3\n", "70\n", "1100\n"]}


def code_items(n: int) -> list[ScoreInput]:
    return [
        ScoreInput(id=str(i), prompt="", response=f"```python\n{SOLUTION}# {i}\n```",
                   reference=json.dumps(CASES), group=None, messages=None, metadata=None)
        for i in range(n)
    ]  # fmt: skip


async def sandboxed_runs_per_s(n: int, concurrency: int) -> float:
    scorer = CodeScorer("code", CodeScorer.Options(max_concurrency=concurrency))
    await scorer.setup()
    items = code_items(n)
    start = time.perf_counter()
    results = await scorer.score_batch(items)
    elapsed = time.perf_counter() - start
    await scorer.close()
    assert all(r.value == 1.0 for r in results), [r for r in results if r.value != 1.0][:1]
    return n * 3 / elapsed


def plain_runs_per_s(n: int, concurrency: int) -> float:
    with tempfile.TemporaryDirectory() as work:
        Path(work, "main.py").write_text(SOLUTION)

        def one(stdin: str) -> str:
            return subprocess.run([PYTHON, "-I", "main.py"], input=stdin, cwd=work,
                                  capture_output=True, text=True, check=True).stdout  # fmt: skip

        stdins = CASES["inputs"] * n
        start = time.perf_counter()
        if concurrency == 1:
            outs = [one(s) for s in stdins]
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                outs = list(pool.map(one, stdins))
        elapsed = time.perf_counter() - start
    assert outs[:3] == CASES["outputs"]
    return len(stdins) / elapsed


async def startup_overhead_ms(runs: int) -> dict[str, float]:
    """/bin/true in a sandbox made on the spot (the whole cost of making one), in one made
    ahead (what a run waits for when the pool has one ready), and with subprocess.run."""
    fresh, ahead = Sandbox(), Sandbox(prestart=1)
    times: dict[str, list[float]] = {"fresh": [], "ahead": [], "plain": []}
    with fresh.work_dir() as work:
        for _ in range(runs):
            for name, sandbox in (("fresh", fresh), ("ahead", ahead)):
                t = time.perf_counter()
                outcome = await sandbox.run(["/bin/true"], work=work, limits=Limits())
                times[name].append(time.perf_counter() - t)
                assert outcome.status == "finished" and outcome.exit_code == 0, outcome
                await asyncio.sleep(0.01)  # time to make the next one ahead, as in real use
            t = time.perf_counter()
            subprocess.run(["/bin/true"], check=True)  # noqa: ASYNC221 - the plain baseline
            times["plain"].append(time.perf_counter() - t)
    await ahead.close()
    ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
    return {
        "sandboxed_ms": round(ms["fresh"], 2),
        "sandboxed_ahead_ms": round(ms["ahead"], 2),
        "plain_ms": round(ms["plain"], 2),
        "overhead_ms": round(ms["fresh"] - ms["plain"], 2),
        "overhead_ahead_ms": round(ms["ahead"] - ms["plain"], 2),
    }


async def sql_items_per_s(n: int) -> float:
    with tempfile.TemporaryDirectory() as root:
        db = Path(root, "shop", "shop.sqlite")
        db.parent.mkdir()
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL)")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?)",
                         [(i, f"c{i % 50}", i * 1.5) for i in range(1000)])  # fmt: skip
        conn.commit()
        conn.close()
        scorer = SqlScorer("sql", SqlScorer.Options(databases=Path(root)))
        gold = "SELECT customer, sum(total) FROM orders GROUP BY customer"
        items = [
            ScoreInput(id=str(i), prompt="", reference=gold, group=None, messages=None,
                       response=f"SELECT customer, sum(total) FROM orders WHERE id >= {i % 3} "
                       "GROUP BY customer", metadata={"db_id": "shop"})
            for i in range(n)
        ]  # fmt: skip
        start = time.perf_counter()
        results = await scorer.score_batch(items)
        elapsed = time.perf_counter() - start
        assert all(r.error is None for r in results)
        return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    rows: dict[str, list[float]] = {k: [] for k in ("sandbox_1", "plain_1", "sandbox_n", "plain_n")}
    launcher()  # compiled once at start-up, as a server does, not inside a measurement
    for _ in range(args.rounds):
        rows["sandbox_1"].append(await sandboxed_runs_per_s(args.items, 1))
        rows["plain_1"].append(plain_runs_per_s(args.items, 1))
        rows["sandbox_n"].append(await sandboxed_runs_per_s(args.items, cores))
        rows["plain_n"].append(plain_runs_per_s(args.items, cores))
    med = {k: round(statistics.median(v), 1) for k, v in rows.items()}
    result = {
        "command": f"benchmarks/sandbox_throughput.py --items {args.items} --rounds {args.rounds}",
        "machine": f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, "
        f"{platform.release()}, euid {os.geteuid()}",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "runs_per_s": {k: [round(x, 1) for x in v] for k, v in rows.items()},
        "median_runs_per_s": med,
        "ratio_serial": round(med["sandbox_1"] / med["plain_1"], 2),
        "ratio_concurrent": round(med["sandbox_n"] / med["plain_n"], 2),
        "startup": await startup_overhead_ms(40),
        "sql_items_per_s": round(await sql_items_per_s(400), 1),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "sandbox_throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
