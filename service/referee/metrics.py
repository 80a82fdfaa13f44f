"""Every Prometheus metric Referee exports, in one place, all prefixed ``referee_``.

Each app gets its own registry so several engines (tests, benchmarks) never collide.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "observe_many"]


def observe_many(histogram: Any, values: Iterable[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, with one lock round per bucket
    touched instead of two per value: the per-item hot path observes whole batches. Falls
    back to ``observe`` for a histogram that is not prometheus_client's labelled child."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total_value = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total_value is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    total = 0.0
    for value in values:
        i = bisect.bisect_left(bounds, value)  # the first bound >= value, as observe() finds
        counts[i] = counts.get(i, 0) + 1
        total += value
    if not counts:
        return
    total_value.inc(total)
    for i, n in counts.items():
        if i < len(buckets):
            buckets[i].inc(n)


# 1 ms .. 60 s
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "referee_requests",
            "Reward requests by pipeline and HTTP status.",
            ["pipeline", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "referee_request_latency_seconds",
            "Time to answer a reward request, by pipeline and HTTP status.",
            ["pipeline", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.openrlhf_prompt_mismatch = Counter(
            "referee_openrlhf_prompt_mismatch",
            "OpenRLHF queries that did not start with their prompt, scored whole "
            "(prompt + response) as the response.",
            ["pipeline"],
            registry=r,
        )
        self.grpc_requests = Counter(
            "referee_grpc_requests",
            "gRPC calls by method, pipeline and status code (a ScoreStream message counts "
            "as one call of method ScoreStream).",
            ["method", "pipeline", "code"],
            registry=r,
        )
        self.grpc_latency = Histogram(
            "referee_grpc_latency_seconds",
            "Time to answer a gRPC call (or one ScoreStream message), by method and code.",
            ["method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.items = Counter(
            "referee_items",
            "Items scored, by pipeline and outcome (ok or error).",
            ["pipeline", "outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "referee_batch_size", "Items per scorer batch.", ["scorer"], buckets=SIZE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.batch_tokens = Histogram(
            "referee_batch_tokens",
            "Padded tokens (longest x count) per scorer batch.",
            ["scorer"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.padding_efficiency = Histogram(
            "referee_batch_padding_efficiency",
            "Real tokens / padded tokens (sum of item costs / (longest x count)) per batch.",
            ["scorer"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=r,
        )
        self.queue_wait = Histogram(
            "referee_queue_wait_seconds",
            "Time an item waited in a scorer queue.",
            ["scorer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_latency = Histogram(
            "referee_scorer_compute_seconds",
            "Time a scorer spent on one batch.",
            ["scorer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "referee_queue_depth", "Items waiting in a scorer queue.", ["scorer"], registry=r
        )
        self.cache_hits = Counter(
            "referee_cache_hits", "Cache hits by scorer and level.", ["scorer", "level"],
            registry=r,
        )  # fmt: skip
        self.cache_misses = Counter(
            "referee_cache_misses", "Cache misses by scorer and level.", ["scorer", "level"],
            registry=r,
        )  # fmt: skip
        self.cache_errors = Counter(
            "referee_cache_errors",
            "Cache calls that failed (down, slow, garbage) by scorer and level; the request "
            "is served without that level.",
            ["scorer", "level"],
            registry=r,
        )
        self.inflight_joins = Counter(
            "referee_single_flight_joins",
            "Items that joined an identical item already being scored.",
            ["scorer"],
            registry=r,
        )
        self.scorer_errors = Counter(
            "referee_scorer_errors",
            "Per-item scorer errors by scorer and error type.",
            ["scorer", "type"],
            registry=r,
        )
        self.scorer_timeouts = Counter(
            "referee_scorer_timeouts",
            "Items whose scorer hit its per-item timeout.",
            ["scorer"],
            registry=r,
        )
        self.overloaded = Counter(
            "referee_overloaded",
            "Requests refused with 429 because a scorer queue was full.",
            ["scorer"],
            registry=r,
        )
        self.timeouts = Counter(
            "referee_request_timeouts", "Requests that hit their deadline.", ["pipeline"],
            registry=r,
        )  # fmt: skip
        self.scorer_call_retries = Counter(
            "referee_scorer_call_retries",
            "Batches sent again after a call to a scorer's own deployment failed (Ray mode: "
            "a replica died or restarted mid-batch), by scorer.",
            ["scorer"],
            registry=r,
        )
        self.admission_refused = Counter(
            "referee_admission_refused",
            "Reward requests refused at the door (429) before their body was read, by reason: "
            "wait (could not start within the wait limit or deadline), bytes (memory bound), "
            "items (item bound).",
            ["reason"],
            registry=r,
        )
        self.admission_in_service = Gauge(
            "referee_admission_in_service", "Reward requests being served now.", registry=r
        )
        self.admission_waiting = Gauge(
            "referee_admission_waiting", "Reward requests waiting at the door for a slot.",
            registry=r,
        )  # fmt: skip
        self.event_loop_lag = Histogram(
            "referee_event_loop_lag_seconds",
            "How late the event loop ran a 10 ms timer (sampled while reward requests are "
            "served): long turns of the loop delay every request, refusals included.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.admission_limit = Gauge(
            "referee_admission_limit",
            "Reward requests allowed in service at once now (follows the event loop's lag).",
            registry=r,
        )
        self.judge_guard_hits = Counter(
            "referee_judge_guard_hits",
            "Responses the judge guard scored with its floor without calling the judge, by "
            "scorer and rule.",
            ["scorer", "rule"],
            registry=r,
        )
        self.code_runs = Counter(
            "referee_code_runs",
            "Programs run by code scorers, by scorer and run verdict (ok, wrong_answer, "
            "runtime_error, time_limit, memory_limit, output_limit, compile_error, or the "
            "failure type when no verdict was reached: overloaded, sandbox_error, ...).",
            ["scorer", "verdict"],
            registry=r,
        )
        self.sandbox_run_seconds = Histogram(
            "referee_sandbox_run_seconds",
            "Wall time of one sandboxed run (compile or test case), by scorer.",
            ["scorer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sql_queries = Counter(
            "referee_sql_queries",
            "SQL items scored, by scorer and verdict (match, mismatch, error, time_limit).",
            ["scorer", "verdict"],
            registry=r,
        )
        self.scorer_ready = Gauge(
            "referee_scorer_ready",
            "1 when a scorer is loaded and warmed up.",
            ["scorer", "kind"],
            registry=r,
        )
        self.reloads = Counter(
            "referee_reloads",
            "Live reloads of a scorer (admin API or SIGHUP) by outcome (ok or failed); a "
            "config apply that rebuilds no scorer counts as scorer `(config)`.",
            ["scorer", "outcome"],
            registry=r,
        )
        self.reload_duration = Histogram(
            "referee_reload_duration_seconds",
            "Time from a reload call to the switch (load and warm-up included).",
            ["scorer"],
            buckets=(*LATENCY_BUCKETS, 120.0, 300.0, 600.0),
            registry=r,
        )
        self.scorer_version = Gauge(
            "referee_scorer_version_info",
            "1 for the version (fingerprint) a scorer serves now.",
            ["scorer", "fingerprint"],
            registry=r,
        )

        # -- reward health (gauges refreshed from the monitors on each scrape) -----------
        self.reward = Histogram(
            "referee_reward",
            "Rewards by pipeline and component (`reward` is the final one).",
            ["pipeline", "component"],
            buckets=(-10, -5, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1, 2, 5, 10),
            registry=r,
        )
        self.reward_mean = Gauge(
            "referee_reward_component_mean", "Mean over the monitor window.",
            ["pipeline", "component"], registry=r,
        )  # fmt: skip
        self.reward_std = Gauge(
            "referee_reward_component_std", "Std over the monitor window.",
            ["pipeline", "component"], registry=r,
        )  # fmt: skip
        self.length_correlation = Gauge(
            "referee_reward_length_correlation",
            "Pearson correlation of a component with response length over the window "
            "(length-bias alarm).",
            ["pipeline", "component"],
            registry=r,
        )
        self.ensemble_disagreement = Gauge(
            "referee_ensemble_disagreement",
            "Mean std across an ensemble node's members over the window.",
            ["pipeline", "node"],
            registry=r,
        )
        self.item_error_rate = Gauge(
            "referee_item_error_rate", "Per-item error rate over the window.", ["pipeline"],
            registry=r,
        )  # fmt: skip

        self.group_pending_items = Gauge(
            "referee_group_pending_items",
            "Items waiting for the rest of their group (group assembly).",
            registry=r,
        )
        self.groups = Counter(
            "referee_groups",
            "Groups assembled across requests, by pipeline and outcome (complete, timeout).",
            ["pipeline", "outcome"],
            registry=r,
        )
        self.group_wait = Histogram(
            "referee_group_wait_seconds",
            "From a group's first item to its last (or its timeout).",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
