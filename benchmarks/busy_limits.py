"""Finding 1 in numbers: ordinary regex checks on a process that is busy matching other
items. Before, a limit that counts the whole process's CPU time (the `regex` engine's own
timeout) tripped and the item was scored as a miss (a wrong reward, with an `info` note);
now the limit counts the check's own CPU time, so the verdict comes back.

    .venv/bin/python benchmarks/busy_limits.py [--items 200] [--threads 3] [--budget-factor 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import regex

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' helpers, as the other benchmarks do

from tests.support import busy_matching_threads, score_input  # noqa: E402

from referee.scorers.rules.match import MatchScorer  # noqa: E402

PATTERN = r"(?:\w+\s)*?ANSWER: (\d+)$"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--threads", type=int, default=3, help="busy matching threads")
    parser.add_argument("--budget-factor", type=float, default=3.0,
                        help="the limit, as a multiple of an idle match's CPU time")  # fmt: skip
    args = parser.parse_args()
    pattern = regex.compile(PATTERN)
    texts = ["word " * 60_000 + f"ANSWER: {i}" for i in range(args.items)]
    started = time.thread_time()
    for text in texts[:20]:
        pattern.search(text)
    budget = args.budget_factor * (time.thread_time() - started) / 20
    scorer = MatchScorer("m", MatchScorer.Options(mode="regex", pattern=PATTERN, max_chars=None,
                                                  regex_timeout_s=budget))  # fmt: skip
    with busy_matching_threads(args.threads):
        old_misses = 0
        for text in texts:  # the engine's own limit, as the scorers used it before
            try:
                pattern.search(text, timeout=budget)
            except TimeoutError:
                old_misses += 1
        items = [score_input(text, id=str(i)) for i, text in enumerate(texts)]
        wall = time.perf_counter()
        results = asyncio.run(scorer.score_batch(items))
        wall = time.perf_counter() - wall
    report = {
        "items": args.items, "busy_threads": args.threads, "budget_factor": args.budget_factor,
        "budget_s": round(budget, 4),
        "before_wrong_rewards": old_misses,
        "after_wrong_rewards": sum(r.value is not None and r.value != 1.0 for r in results),
        "after_failed": dict(Counter(r.error_type for r in results if r.error is not None)),
        "after_scored_correct": sum(r.value == 1.0 for r in results),
        "after_wall_s": round(wall, 2),
    }  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
