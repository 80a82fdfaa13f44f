"""Finding 1 in numbers: ordinary regex checks on a process that is busy matching other
items. Before, a limit that counts the whole process's CPU time (the `regex` engine's own
timeout) tripped and the item was scored as a miss (a wrong reward, with an `info` note);
now the limit counts the check's own CPU time, so the verdict comes back.

    python benchmarks/busy_limits.py [--items 200] [--threads 3] [--budget-factor 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import Counter

import regex
from tests.support import score_input

from referee.scorers.rules.match import MatchScorer

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
    stop = threading.Event()
    catastrophic = regex.compile(r"(a|aa)+$")

    def burn() -> None:
        while not stop.is_set():
            try:
                catastrophic.search("a" * 40 + "b", timeout=0.2)
            except TimeoutError:
                pass

    threads = [threading.Thread(target=burn, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    try:
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
    finally:
        stop.set()
        for t in threads:
            t.join()
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
