"""Reward-health stats over a synthetic stream whose length bias is known exactly."""

from __future__ import annotations

import statistics

import pytest

from tests.integration.conftest import RULES_CONFIG, serve_app


def config() -> dict:
    data = {**RULES_CONFIG}
    data["scorers"] = {
        **RULES_CONFIG["scorers"],
        "other": {"kind": "python", "options": {
            "function": "tests.probes:metadata_value", "kwargs": {"key": "other"}}},
    }  # fmt: skip
    data["pipelines"] = {
        "mix": {"reward": {"type": "uwo", "lam": 0.5, "inputs": ["meta", "other"]}},
    }
    return data


async def test_stats_endpoint_reports_length_bias_disagreement_and_errors() -> None:
    lengths = [10 * i for i in range(1, 51)]
    items = [{"id": f"i{n}", "response": "x" * n, "metadata": {"score": 2.0 * n + 1, "other": -1.0 * n}}
             for n in lengths]  # fmt: skip
    items += [{"id": f"bad{k}", "response": "y" * 7, "metadata": {}} for k in range(5)]
    async with serve_app(config()) as (client, _):
        for start in range(0, len(items), 11):  # a stream of requests, not one batch
            r = await client.post(
                "/v1/rewards", json={"pipeline": "mix", "items": items[start : start + 11]}
            )
            assert r.status_code == 200
        stats = (await client.get("/v1/pipelines/mix/stats")).json()
        metrics = (await client.get("/metrics")).text

    assert stats["items"] == 55 and stats["errors"] == 5
    assert stats["error_rate"] == pytest.approx(5 / 55)
    assert stats["errors_by_type"] == {"scorer_error": 5}
    meta, other, reward = (stats["components"][k] for k in ("meta", "other", "reward"))
    assert meta["length_correlation"] == pytest.approx(1.0)
    assert other["length_correlation"] == pytest.approx(-1.0)
    rewards = [(2.0 * n + 1 - n) / 2 - 0.5 * ((2.0 * n + 1 + n) / 2) ** 2 for n in lengths]
    assert reward["length_correlation"] == pytest.approx(statistics.correlation(lengths, rewards))
    assert meta["count"] == 50 and meta["mean"] == pytest.approx(
        statistics.fmean(2.0 * n + 1 for n in lengths)
    )
    assert meta["quantiles"]["p50"] == pytest.approx(
        statistics.median(2.0 * n + 1 for n in lengths)
    )
    spread = stats["ensemble_disagreement"]["reward"]
    assert spread["members"] == ["meta", "other"]
    assert spread["mean_std"] == pytest.approx(statistics.fmean((3.0 * n + 1) / 2 for n in lengths))
    assert 'referee_reward_length_correlation{component="meta",pipeline="mix"} 1.0' in metrics
    assert 'referee_item_error_rate{pipeline="mix"} 0.0909' in metrics
    assert 'referee_reward_count{component="reward",pipeline="mix"} 50.0' in metrics
    assert 'referee_reward_count{component="meta",pipeline="mix"} 50.0' in metrics


async def test_stats_of_an_unknown_pipeline_is_404() -> None:
    async with serve_app() as (client, _):
        r = await client.get("/v1/pipelines/nope/stats")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


async def test_metrics_and_stats_survive_rewards_near_the_largest_float() -> None:
    # Finding 5: sums of squares of such rewards overflowed (OverflowError in fsum) and
    # /metrics answered 500 until the window rolled over.
    values = [1e308, -1e308, 1.7976931348623157e308, 5e-324, 0.0, -1.5e308, 1e308]
    items = [{"id": f"i{k}", "response": "x" * (k + 1), "metadata": {"score": v}}
             for k, v in enumerate(values)]  # fmt: skip
    async with serve_app() as (client, _):
        r = await client.post("/v1/rewards", json={"pipeline": "meta", "items": items})
        assert r.status_code == 200 and r.json()["usage"]["errors"] == 0
        stats = await client.get("/v1/pipelines/meta/stats")
        metrics = await client.get("/metrics")
    assert stats.status_code == 200, stats.text
    assert metrics.status_code == 200, metrics.text
    meta = stats.json()["components"]["meta"]
    assert meta["mean"] == pytest.approx(statistics.fmean([v / 1e308 for v in values]) * 1e308)
    assert meta["max"] == values[2] and meta["min"] == -1.5e308
    assert 0 < meta["std"] < 2e308 and -1 <= meta["length_correlation"] <= 1
    assert all(abs(q) <= values[2] for q in meta["quantiles"].values())
    assert 'referee_reward_component_mean{component="meta",pipeline="meta"}' in metrics.text
