"""What an eval measures, as plain functions of rewards and labels.

Pairs: accuracy (chosen above rejected; a tie counts as half), per subset and over all
pairs; the margin (chosen minus rejected); length bias: the Pearson correlation of reward
with response length in characters, and accuracy on the pairs whose chosen response is
the shorter one versus the longer one. Best-of-N: top-1 accuracy (the highest reward is
on a best-labelled response; ties at the top share the credit), a random pick's accuracy
for scale, the mean Spearman correlation of reward with graded labels, length correlation.
A pair or set with a missing value (an item error, a component that was not computed)
is left out of that signal's numbers and counted in ``missing``: never a guessed verdict.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = [
    "best_of_n_metrics",
    "pair_metrics",
    "pearson",
    "spearman",
    "summary",
]

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """None below three points or when a series is constant (no correlation to speak of)."""
    if len(xs) < 3:
        return None
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:
        return None


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):  # ties share the mean of their ranks
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson on tie-averaged ranks); None where it is undefined."""
    if len(xs) < 2:
        return None
    try:
        return statistics.correlation(_ranks(xs), _ranks(ys))
    except statistics.StatisticsError:
        return None


def summary(values: Sequence[float]) -> dict[str, object]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def quantile(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "count": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "min": ordered[0],
        "max": ordered[-1],
        "quantiles": {f"p{round(q * 100):02d}": quantile(q) for q in _QUANTILES},
    }


def _credit(chosen: float, rejected: float) -> float:
    return 1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0


def _accuracy(credits: Sequence[float]) -> float | None:
    return statistics.fmean(credits) if credits else None


def pair_metrics(
    chosen: Sequence[float | None],
    rejected: Sequence[float | None],
    subsets: Sequence[str],
    chosen_lengths: Sequence[int],
    rejected_lengths: Sequence[int],
) -> dict[str, object]:
    """Accuracy, margins and length bias of one signal over preference pairs."""
    credits: list[float] = []
    margins: list[float] = []
    by_subset: dict[str, list[float]] = {}
    shorter: list[float] = []
    longer: list[float] = []
    lengths: list[float] = []
    rewards: list[float] = []
    missing = 0
    for c, r, subset, lc, lr in zip(
        chosen, rejected, subsets, chosen_lengths, rejected_lengths, strict=True
    ):
        by_subset.setdefault(subset, [])
        if c is None or r is None:
            missing += 1
            continue
        credit = _credit(c, r)
        credits.append(credit)
        by_subset[subset].append(credit)
        margins.append(c - r)
        if lc < lr:
            shorter.append(credit)
        elif lc > lr:
            longer.append(credit)
        lengths += [float(lc), float(lr)]
        rewards += [c, r]
    return {
        "pairs": len(credits),
        "missing": missing,
        "accuracy": _accuracy(credits),
        "ties": sum(1 for c in credits if c == 0.5),
        "subsets": {
            name: {"pairs": len(values), "accuracy": _accuracy(values)}
            for name, values in by_subset.items()
        },
        "margin": summary(margins),
        "chosen": summary([v for v in chosen if v is not None]),
        "rejected": summary([v for v in rejected if v is not None]),
        "length": {
            "correlation": pearson(lengths, rewards),
            "chosen_shorter": {"pairs": len(shorter), "accuracy": _accuracy(shorter)},
            "chosen_longer": {"pairs": len(longer), "accuracy": _accuracy(longer)},
        },
    }


def best_of_n_metrics(
    rewards: Sequence[Sequence[float | None]],
    labels: Sequence[Sequence[float]],
    subsets: Sequence[str],
    lengths: Sequence[Sequence[int]],
    graded: bool,
) -> dict[str, object]:
    """Top-1 accuracy, rank correlation and length bias of one signal over best-of-N sets."""
    credits: list[float] = []
    chance: list[float] = []
    rhos: list[float] = []
    undefined_rho = 0
    by_subset: dict[str, list[float]] = {}
    all_lengths: list[float] = []
    all_rewards: list[float] = []
    missing = 0
    for values, grades, subset, sizes in zip(rewards, labels, subsets, lengths, strict=True):
        by_subset.setdefault(subset, [])
        if any(v is None for v in values):
            missing += 1
            continue
        scored = [float(v) for v in values if v is not None]
        best = max(grades)
        top = max(scored)
        at_top = [i for i, v in enumerate(scored) if v == top]
        credit = sum(grades[i] == best for i in at_top) / len(at_top)
        credits.append(credit)
        by_subset[subset].append(credit)
        chance.append(sum(g == best for g in grades) / len(grades))
        if graded and len(set(grades)) > 1:
            rho = spearman(scored, list(grades))
            if rho is None:
                undefined_rho += 1  # every response got the same reward
            else:
                rhos.append(rho)
        all_lengths += [float(n) for n in sizes]
        all_rewards += scored
    return {
        "sets": len(credits),
        "missing": missing,
        "top1_accuracy": _accuracy(credits),
        "random_top1": _accuracy(chance),
        "subsets": {
            name: {"sets": len(values), "top1_accuracy": _accuracy(values)}
            for name, values in by_subset.items()
        },
        "spearman": {
            "mean": statistics.fmean(rhos) if rhos else None,
            "sets": len(rhos),
            "undefined": undefined_rho,
        }
        if graded
        else None,
        "rewards": summary(all_rewards),
        "length": {"correlation": pearson(all_lengths, all_rewards)},
    }
