"""How well the judge guard generalises: catch rate on judge-fooling answers it was not
built from, and false flags on ordinary answers.

The attack collection (tests/data/judge_guard/attacks.jsonl) is split in two by a hash of
each id: the guard's vocabulary was built looking only at the held-in half; the held-out
half and the ordinary answers (tests/data/judge_guard/ordinary.jsonl) measure it.

    python benchmarks/judge_guard.py [--misses] [--split held_in|held_out] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

from referee.scorers.judge.guard import JudgeGuard

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "judge_guard"


def load(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="print what was missed/flagged")
    parser.add_argument("--split", choices=["held_in", "held_out"], help="misses of one split")
    parser.add_argument("--out", help="also write the report (JSON) here")
    args = parser.parse_args()
    guard = JudgeGuard()
    attacks, ordinary = load("attacks.jsonl"), load("ordinary.jsonl")
    report: dict[str, object] = {}
    for split in ("held_in", "held_out"):
        rows = [r for r in attacks if r["split"] == split]
        caught = collections.Counter()
        total = collections.Counter()
        for r in rows:
            total[r["category"]] += 1
            hit = guard.check(r["response"], r["prompt"])
            caught[r["category"]] += hit is not None
            if args.misses and hit is None and args.split in (None, split):
                print(f"MISS {split} {r['id']}: {r['response']!r}")
        report[split] = {
            "caught": sum(caught.values()), "total": len(rows),
            "catch_rate": round(sum(caught.values()) / len(rows), 3),
            "by_category": {c: f"{caught[c]}/{total[c]}" for c in sorted(total)},
        }  # fmt: skip
    flagged = []
    for r in ordinary:
        rule = guard.check(r["response"], r["prompt"])
        if rule is not None:
            flagged.append((r["id"], r["response"], rule))
            if args.misses:
                print(f"FALSE FLAG {r['id']} ({rule}): {r['response']!r} to {r['prompt']!r}")
    report["ordinary"] = {"flagged": len(flagged), "total": len(ordinary),
                          "false_flag_rate": round(len(flagged) / len(ordinary), 3)}  # fmt: skip
    rows = [(r["response"], r["prompt"]) for r in attacks + ordinary]
    started = time.perf_counter()
    for _ in range(20):
        for response, prompt in rows:
            guard.check(response, prompt)
    report["us_per_check"] = round((time.perf_counter() - started) / (20 * len(rows)) * 1e6, 1)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
