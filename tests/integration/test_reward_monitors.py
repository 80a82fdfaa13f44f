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
