"""Scorer-replica metrics through Ray's metrics system: Ray exports them (prefixed
``ray_``) on every node's metrics port, which Prometheus scrapes in a Ray cluster (KubeRay
pods' metrics port, or `ray start --metrics-export-port`). The batcher's metrics keep
their names, labels and buckets; each sample is also tagged with its replica."""

from __future__ import annotations

from typing import Any

from referee.metrics import Metrics

__all__ = ["ray_backed_metrics"]

# The metrics a scorer replica's batcher records (attribute of Metrics -> kind).
_BATCHER = {
    "queue_depth": "gauge",
    "queue_wait": "histogram",
    "batch_size": "histogram",
    "batch_tokens": "histogram",
    "compute_latency": "histogram",
    "padding_efficiency": "histogram",
    "overloaded": "counter",
    "scorer_errors": "counter",
    "scorer_timeouts": "counter",
    "judge_guard_hits": "counter",  # recorded by the judge scorer itself (bind_metrics)
}


class _Child:
    def __init__(self, metric: Any, tags: dict[str, str]) -> None:
        self._metric, self._tags = metric, tags

    def observe(self, value: float) -> None:
        self._metric.observe(value, tags=self._tags)

    def inc(self, value: float = 1.0) -> None:
        self._metric.inc(value, tags=self._tags)

    def set(self, value: float) -> None:
        self._metric.set(value, tags=self._tags)


class _Family:
    """``.labels(*values)`` like prometheus_client, recording to a Ray metric."""

    def __init__(self, metric: Any, label_names: list[str], replica: str) -> None:
        self._metric, self._names, self._replica = metric, label_names, replica

    def labels(self, *values: str) -> _Child:
        return _Child(self._metric, {**dict(zip(self._names, values, strict=True)),
                                     "replica": self._replica})  # fmt: skip


def ray_backed_metrics(replica: str) -> Metrics:
    """A Metrics whose batcher metrics go to Ray (the rest stay in-process, unused)."""
    from ray.util import metrics as ray_metrics

    metrics = Metrics()
    for attr, kind in _BATCHER.items():
        source = getattr(metrics, attr)
        name = source._name.removesuffix("_total")
        labels = [*source._labelnames]
        description = source._documentation
        keys = (*labels, "replica")
        if kind == "histogram":
            bounds = [b for b in source._upper_bounds if b != float("inf")]
            metric: Any = ray_metrics.Histogram(name, description, boundaries=bounds, tag_keys=keys)
        elif kind == "counter":
            metric = ray_metrics.Counter(name, description, tag_keys=keys)
        else:
            metric = ray_metrics.Gauge(name, description, tag_keys=keys)
        setattr(metrics, attr, _Family(metric, labels, replica))
    return metrics
