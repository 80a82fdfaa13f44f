"""The SDK's option to send failed, retryable items again, against a real server: an item
whose verifier timed out comes back ``failed`` and ``retryable`` (no reward); with
``retry_failed_items`` the SDK sends it again, with the rest of its group, and the group's
rewards are then computed over the whole group."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from referee_client import RewardClient
from tests.e2e.server import running_server

CONFIG = """
scorers:
  flaky:
    kind: python
    options: {function: "tests.probes:slow_first_time", kwargs: {delay_s: 2.0}, timeout_s: 0.3}
pipelines:
  flaky: {reward: flaky}
  flaky_norm: {reward: {type: scorer, scorer: flaky, transforms: [{type: group_norm}]}}
"""
_ids = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = tmp_path_factory.mktemp("retry") / "retry.yaml"
    config.write_text(CONFIG)
    with running_server("--config", str(config)) as (url, _):
        yield url


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def test_a_timed_out_item_is_failed_and_retryable_with_no_reward(server: str) -> None:
    with RewardClient(server) as client:
        slow, quick = fresh("s"), fresh("q")
        response = client.score(
            [{"id": slow, "response": "slow two three"}, {"id": quick, "response": "a b"}],
            pipeline="flaky",
        )
    failed, scored = response.results
    assert failed.outcome == "failed" and failed.reward is None and failed.retryable
    assert failed.error is not None and failed.error.type == "timeout"
    assert scored.outcome == "scored" and scored.reward == 2.0
    assert response.usage.errors == 1


def test_retry_failed_items_sends_them_again_and_they_are_scored(server: str) -> None:
    with RewardClient(server, retry_failed_items=1) as client:
        response = client.score(
            [{"id": fresh("s"), "response": "slow two three"}, {"id": fresh("q"), "response": "a"}],
            pipeline="flaky",
        )
    assert [r.outcome for r in response.results] == ["scored", "scored"]
    assert [r.reward for r in response.results] == [3.0, 1.0]
    assert response.usage.errors == 0


def test_a_retried_item_is_sent_with_its_group_so_group_rewards_see_the_whole_group(
    server: str,
) -> None:
    items = [
        {"id": fresh("s"), "response": "slow two three four", "group": "g"},
        {"id": fresh("q"), "response": "one two", "group": "g"},
        {"id": fresh("o"), "response": "x", "group": "other"},
    ]
    with RewardClient(server, retry_failed_items=1) as client:
        response = client.score(items, pipeline="flaky_norm")
    slow, quick, other = response.results
    assert slow.outcome == quick.outcome == "scored"
    # Normalised over both members (4 and 2 words), not over `quick` alone (which gives 0).
    assert slow.reward is not None and quick.reward is not None
    assert slow.reward > 0 > quick.reward and slow.reward == pytest.approx(-quick.reward)
    assert other.outcome == "scored"


def test_retry_failed_items_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="retry_failed_items must be >= 0"):
        RewardClient("http://127.0.0.1:1", retry_failed_items=-1)


def test_the_documented_sdk_sample_runs_and_masks_nothing_it_could_retry(server: str) -> None:
    """Runs the `outcomes-sdk` sample of docs/concepts/outcomes.md against this server."""
    doc = (Path(__file__).parents[2] / "docs" / "concepts" / "outcomes.md").read_text()
    found = re.search(r"```python\n(# outcomes-sdk\n.*?)```", doc, re.S)
    assert found, "the outcomes-sdk sample is missing from docs/concepts/outcomes.md"
    env = {**os.environ, "REFEREE_URL": server, "REFEREE_PIPELINE": "flaky_norm"}
    ran = subprocess.run([sys.executable, "-c", found.group(1)], capture_output=True,
                         text=True, timeout=120, env=env)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["a", "b"]
    assert float(lines[0].split()[1]) > 0 > float(lines[1].split()[1])  # scored, whole group
