"""Reward-health monitors: what a rolling window of rewards says about the reward signal.

Per pipeline, over the last ``window`` scored items: the distribution of every component
(mean, std, quantiles), its Pearson correlation with response length (a length-bias
alarm: a reward that mostly measures length is being hacked), the disagreement across
ensemble members (the spread ``uwo`` penalises), and the per-item error rate. Recording
is O(components) per item; statistics are computed when asked for (the stats endpoint,
a /metrics scrape), never on the request path.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import Histogram

from referee.metrics import Metrics
from referee.pipeline.nodes import CombineNode, GateNode, Node

__all__ = ["PipelineMonitor", "ensemble_members"]

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def ensemble_members(root: Node, names: Mapping[int, str]) -> dict[str, list[str]]:
    """Combinator nodes with two or more members -> their members' component names."""
    out: dict[str, list[str]] = {}

    def walk(node: Node) -> None:
        if isinstance(node, CombineNode):
            if len(node.inputs) > 1:
                out[names[id(node)]] = [names[id(child)] for child in node.inputs]
            for child in node.inputs:
                walk(child)
        elif isinstance(node, GateNode):
            walk(node.when.node)
            walk(node.then)

    walk(root)
    return out


@dataclass(slots=True)
class _Record:
    length: int | None  # None: no response text (an image-only response)
    values: dict[str, float | None] | None  # None: the item had an error
    error_type: str | None = None


# Every statistic works on values divided by their largest magnitude (so in [-1, 1]) and is
# scaled back: sums of squares of rewards near 1e308 would overflow (fsum raises
# OverflowError), and a failing /metrics scrape would hide the reward signal for a window.


def _unit(values: Sequence[float]) -> tuple[list[float], float]:
    """``values`` divided by their largest magnitude, and that magnitude (1 when all are 0)."""
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    return [v / scale for v in values], scale


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    unit, scale = _unit(values)
    std = statistics.pstdev(unit) if len(unit) > 1 else 0.0
    return statistics.fmean(unit) * scale, std * scale


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3:
        return None
    try:
        return statistics.correlation(_unit(xs)[0], _unit(ys)[0])
    except statistics.StatisticsError:  # a constant series: no correlation to speak of
        return None


def _quantile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    frac = position - low
    # Weighted, not low + (high - low) * frac: the difference of two finite values can overflow.
    return ordered[low] * (1 - frac) + ordered[high] * frac


class PipelineMonitor:
    def __init__(self, pipeline: str, members: dict[str, list[str]], window: int) -> None:
        self.pipeline = pipeline
        self.members = members
        self._records: deque[_Record] = deque(maxlen=window)
        self._histograms: dict[str, Histogram] = {}

    def histogram(self, metrics: Metrics, component: str) -> Histogram:
        """The labelled reward histogram of one component, resolved once."""
        child = self._histograms.get(component)
        if child is None:
            child = self._histograms[component] = metrics.reward.labels(self.pipeline, component)
        return child

    def record(
        self,
        length: int | None,
        components: dict[str, float | None] | None,
        error_type: str | None = None,
    ) -> None:
        """One scored item: its response length (None when the response has no text: an
        image) and component values (None on error, with the error's type: timeouts, parse
        failures, missing fields...)."""
        self._records.append(_Record(length, components, error_type))

    def stats(self) -> dict[str, object]:
        records = list(self._records)
        ok = [r for r in records if r.values is not None]
        names = sorted({name for r in ok for name in (r.values or {})})
        components: dict[str, object] = {}
        for name in names:
            present = [(r.length, v) for r in ok
                       if (v := (r.values or {}).get(name)) is not None]  # fmt: skip
            values = sorted(v for _, v in present)
            # length bias: over the items whose response has text
            pairs = [(float(n), v) for n, v in present if n is not None]
            if not values:
                continue
            mean, std = _mean_std(values)
            components[name] = {
                "count": len(values),
                "mean": mean,
                "std": std,
                "min": values[0],
                "max": values[-1],
                "quantiles": {f"p{round(q * 100):02d}": _quantile(values, q) for q in _QUANTILES},
                "length_correlation": _pearson([p[0] for p in pairs], [p[1] for p in pairs]),
            }
        disagreement: dict[str, object] = {}
        for node, member_names in self.members.items():
            spreads = []
            for r in ok:
                vals = [(r.values or {}).get(m) for m in member_names]
                if all(v is not None for v in vals):
                    spreads.append(_mean_std([float(v) for v in vals if v is not None])[1])
            if spreads:
                disagreement[node] = {
                    "members": member_names,
                    "mean_std": _mean_std(spreads)[0],
                    "max_std": max(spreads),
                }
        return {
            "pipeline": self.pipeline,
            "window": self._records.maxlen,
            "items": len(records),
            "errors": len(records) - len(ok),
            "error_rate": (len(records) - len(ok)) / len(records) if records else 0.0,
            "errors_by_type": dict(
                Counter(r.error_type or "error" for r in records if r.values is None)
            ),
            "components": components,
            "ensemble_disagreement": disagreement,
        }

    def export(self, metrics: Metrics) -> dict[str, object]:
        """Compute the stats and set the reward-health gauges from them."""
        stats = self.stats()
        p = self.pipeline
        metrics.item_error_rate.labels(p).set(float(stats["error_rate"]))  # type: ignore[arg-type]
        for name, comp in stats["components"].items():  # type: ignore[attr-defined]
            metrics.reward_mean.labels(p, name).set(comp["mean"])
            metrics.reward_std.labels(p, name).set(comp["std"])
            corr = comp["length_correlation"]
            metrics.length_correlation.labels(p, name).set(math.nan if corr is None else corr)
        for node, d in stats["ensemble_disagreement"].items():  # type: ignore[attr-defined]
            metrics.ensemble_disagreement.labels(p, node).set(d["mean_std"])
        return stats
