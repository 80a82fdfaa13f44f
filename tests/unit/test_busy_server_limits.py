"""Finding 1: limits that guard against pathological inputs must not trip because the server
is busy, and when they do trip the item is failed (retryable), never a reward.

The ``regex`` engine's timeout counts the whole process's CPU time, so other threads matching
at the same time (the server's worker threads) run it down: the regex test runs busy matching
threads in this process and first shows that under this load the engine's own limit trips
on the ordinary response. The math test stops the worker process (SIGSTOP) for longer than
its budget, as a machine with no free core would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import regex

from referee.scorers._cpu_limit import CpuBudgetSpent, VerifierStarved, cpu_limited
from referee.scorers.base import BATCH_DEADLINE
from referee.scorers.rules.match import MatchScorer
from referee.scorers.rules.math import MathScorer
from tests.support import busy_matching_threads, score_input

# An ordinary pattern and response: ~20 ms of CPU to match on an idle core.
PATTERN = r"(?:\w+\s)*?ANSWER: (\d+)$"
RESPONSE = "word " * 100_000 + "ANSWER: 42"


def _cpu_cost(pattern: regex.Pattern[str], text: str) -> float:
    started = time.thread_time()
    assert pattern.search(text) is not None
    return time.thread_time() - started


async def test_a_regex_crowded_out_by_other_matches_still_gives_its_verdict() -> None:
    pattern = regex.compile(PATTERN)
    budget = 5 * min(_cpu_cost(pattern, RESPONSE) for _ in range(3))
    scorer = MatchScorer(
        "m",
        MatchScorer.Options(mode="regex", pattern=PATTERN, max_chars=None, regex_timeout_s=budget),
    )
    items = [score_input(RESPONSE, id=str(i)) for i in range(10)]
    with busy_matching_threads(6):
        # The precondition: under this load the engine's own limit trips on this response.
        with pytest.raises(TimeoutError):
            pattern.search(RESPONSE, timeout=budget)
        results = await scorer.score_batch(items)
    # Never a miss: each item gets its verdict, or (if its own CPU time really ran past the
    # budget on this contended machine) no reward and a retryable failure.
    assert all(r.value == 1.0 or r.error_type == "verifier_timeout" for r in results), results
    assert sum(r.value == 1.0 for r in results) >= 5, results


def test_a_catastrophic_regex_still_spends_its_budget_under_load() -> None:
    pattern = regex.compile(r"(a|aa)+$")
    with busy_matching_threads(), pytest.raises(CpuBudgetSpent):
        cpu_limited(lambda wall: pattern.search("a" * 40 + "b", timeout=wall), 0.05)


def test_a_check_that_cannot_get_cpu_before_the_deadline_is_starved_not_spent() -> None:
    def never_gets_cpu(wall: float) -> None:
        time.sleep(wall)  # no CPU used: a thread waiting for a core
        raise TimeoutError

    token = BATCH_DEADLINE.set(time.monotonic() + 0.3)
    try:
        with pytest.raises(VerifierStarved, match="too busy"):
            cpu_limited(never_gets_cpu, 0.05)
    finally:
        BATCH_DEADLINE.reset(token)


async def test_a_math_worker_paused_past_its_budget_still_gives_its_verdict() -> None:
    scorer = MathScorer("m", MathScorer.Options(workers=1, timeout_s=1))
    await scorer.setup()
    try:
        [pid] = scorer._pool.pids()
        os.kill(pid, signal.SIGSTOP)  # no CPU for 2.5 s: more than the 1 s budget in wall time
        task = asyncio.ensure_future(scorer.score_batch([score_input("\\boxed{42}", "42")]))
        await asyncio.sleep(2.5)
        os.kill(pid, signal.SIGCONT)
        [result] = await task
        assert result.error is None, result.error
        assert result.value == 1.0
    finally:
        await scorer.close()
