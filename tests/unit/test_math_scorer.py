"""The ``math`` scorer: math-verify equivalence in worker processes with hard deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pydantic
import pytest
import pytest_asyncio

from referee.scorers.base import ScoreInput, ScoreResult
from referee.scorers.rules.math import MathScorer
from tests.support import score_input

in_module_loop = pytest.mark.asyncio(loop_scope="module")

# Evaluating this power tower runs until math-verify's alarm (or forever without one).
TOWER = "The answer is \\boxed{9^{9^{9^{9}}}}"

C, W, N = "correct", "wrong", "no answer"
# (gold, response, expected): checked against math-verify 0.9 by hand; each is also right.
TABLE: list[tuple[str, str, str]] = [
    # fractions, decimals, percentages
    ("\\frac{1}{2}", "The answer is \\boxed{0.5}", C),
    ("0.5", "\\boxed{\\frac{1}{2}}", C),
    ("\\frac{1}{2}", "So the answer is 1/2.", C),
    ("\\frac{1}{2}", "$\\dfrac12$", C),
    ("\\frac{1}{2}", "\\boxed{50\\%}", C),
    ("0.5", "The answer is 50%", C),
    ("\\frac{3}{4}", "\\boxed{0.75}", C),
    ("1/2", "\\boxed{2/4}", C),
    ("\\frac{1}{3}", "\\boxed{\\frac{2}{6}}", C),
    ("-\\frac{1}{2}", "\\boxed{-0.5}", C),
    ("\\frac{1}{3}", "\\boxed{0.333}", W),
    ("-\\frac{1}{2}", "\\boxed{0.5}", W),
    # roots and constants
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}", C),
    ("2\\sqrt{3}", "\\boxed{\\sqrt{12}}", C),
    ("\\sqrt{8}", "\\boxed{2\\sqrt{2}}", C),
    ("\\sqrt{2}", "\\boxed{1.41421356}", C),
    ("\\sqrt{2}", "\\boxed{1.41}", W),
    ("\\pi", "\\boxed{\\pi}", C),
    ("2\\pi", "\\boxed{\\frac{4\\pi}{2}}", C),
    ("\\pi/2", "\\boxed{\\frac{\\pi}{2}}", C),
    ("3.14159", "\\boxed{3.1416}", W),
    ("\\infty", "\\boxed{\\infty}", C),
    # integers, signs, notation
    ("42", "The answer is 42.", C),
    ("42", "\\boxed{42.0}", C),
    ("42", "\\boxed{43}", W),
    ("42", "\\boxed{41.9999}", W),
    ("-5", "\\boxed{-5}", C),
    ("-3", "\\boxed{- 3}", C),
    ("-5", "\\boxed{5}", W),
    ("5", "The final answer is -5", W),
    ("1,000", "\\boxed{1000}", C),
    ("1500", "\\boxed{1.5 \\times 10^{3}}", C),
    ("1500", "\\boxed{1.5 \\times 10^{4}}", W),
    ("0.001", "\\boxed{10^{-3}}", C),
    ("2^{10}", "\\boxed{1024}", C),
    ("10!", "\\boxed{3628800}", C),
    ("\\binom{5}{2}", "\\boxed{10}", C),
    ("\\boxed{3}", "\\boxed{3}", C),
    ("10", "\\boxed{10\\text{ cm}}", C),
    # intervals, sets, tuples, relations
    ("[1,2)", "\\boxed{\\left[1, 2\\right)}", C),
    ("[1,2)", "\\boxed{[1,2]}", W),
    ("[1,2)", "\\boxed{(1,2)}", W),
    ("(0,\\infty)", "$x \\in (0, \\infty)$", C),
    ("\\mathbb{R}", "\\boxed{(-\\infty, \\infty)}", C),
    ("\\{1,2\\}", "\\boxed{\\{2,1\\}}", C),
    ("\\{1,2,3\\}", "\\boxed{\\{1,2\\}}", W),
    ("1, 2, 3", "\\boxed{3, 2, 1}", C),
    ("(3,-2)", "\\boxed{(3, -2)}", C),
    ("(3,-2)", "\\boxed{(-2, 3)}", W),
    ("x < 3", "\\boxed{(-\\infty, 3)}", C),
    ("x \\le 3", "\\boxed{x < 3}", W),
    ("x=3", "\\boxed{3}", C),
    ("3", "\\boxed{x=3}", C),
    # expressions, complex numbers, text
    ("x^2+2x+1", "\\boxed{(x+1)^2}", C),
    ("x^2-1", "\\boxed{(x-1)(x+1)}", C),
    ("x^2+1", "\\boxed{(x+1)^2}", W),
    ("$x^2$", "\\boxed{x^2}", C),
    ("$x^2$", "\\boxed{y^2}", W),
    ("3+2i", "\\boxed{2i+3}", C),
    ("3+2i", "\\boxed{3-2i}", W),
    ("\\text{Monday}", "\\boxed{\\text{Monday}}", C),
    ("\\text{Monday}", "\\boxed{\\text{Tuesday}}", W),
    # hedging: every boxed answer counts, so two boxes make a set
    ("\\frac{1}{2}", "\\boxed{1/2} is wrong, the answer is \\boxed{1/3}", W),
    # nothing to extract
    ("42", "I don't know.", N),
    ("42", "banana", N),
    ("42", "", N),
    ("42", "\\boxed{}", N),
    ("42", "???!!", N),
    ("42", "The answer is forty-two.", N),
]


def item(reference: str | None, response: str, id: str = "i") -> ScoreInput:
    return score_input(response, reference, id)


def check(result: ScoreResult, expected: str) -> None:
    assert result.error is None, result.error
    if expected == C:
        assert (result.value, result.reason) == (1.0, None)
    elif expected == W:
        assert result.value == 0.0
        assert "not equivalent to the reference" in (result.reason or "")
    else:
        assert (result.value, result.reason) == (0.0, "no answer found in response")
    assert result.cacheable


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scorer() -> AsyncIterator[MathScorer]:
    s = MathScorer("math", MathScorer.Options(workers=2))
    await s.setup()
    yield s
    await s.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def quick() -> AsyncIterator[MathScorer]:
    """timeout_s=1 and distinctive rewards, for the timeout and crash tests."""
    options = MathScorer.Options(workers=2, timeout_s=1, reward_correct=2.0, reward_wrong=-1.0)
    s = MathScorer("quick", options)
    await s.setup()
    yield s
    await s.close()


async def wait_ready(s: MathScorer, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not s.health()["ready"]:
        assert time.monotonic() < deadline, "workers were not replaced"
        await asyncio.sleep(0.05)


@in_module_loop
@pytest.mark.parametrize(("gold", "response", "expected"), TABLE)
async def test_table_of_answers(
    scorer: MathScorer, gold: str, response: str, expected: str
) -> None:
    [result] = await scorer.score_batch([item(gold, response)])
    check(result, expected)


@in_module_loop
async def test_a_mixed_batch_gives_one_result_per_item_in_order(scorer: MathScorer) -> None:
    items = [item(g, r, id=str(i)) for i, (g, r, _) in enumerate(TABLE)]
    items.insert(7, item(None, "\\boxed{1}", id="no-reference"))
    results = await scorer.score_batch(items)
    assert len(results) == len(items) == len(TABLE) + 1
    missing = results.pop(7)
    assert missing.error_type == "missing_field" and missing.value is None
    for result, (_, _, expected) in zip(results, TABLE, strict=True):
        check(result, expected)


@in_module_loop
async def test_missing_reference_fails_that_item_alone(scorer: MathScorer) -> None:
    results = await scorer.score_batch([item("2", "\\boxed{2}"), item(None, "\\boxed{2}")])
    check(results[0], C)
    assert results[1].value is None
    assert results[1].error == "the math scorer needs `reference` (the gold answer)"
    assert results[1].error_type == "missing_field" and not results[1].cacheable


@in_module_loop
@pytest.mark.parametrize("gold", ["", "   ", "???", "\\frac{", "x+"])
async def test_an_unparsable_reference_is_an_item_error(scorer: MathScorer, gold: str) -> None:
    [result] = await scorer.score_batch([item(gold, "\\boxed{1}")])
    assert result.value is None and result.error_type == "invalid_reference"
    assert (result.error or "").startswith("cannot parse the reference")


@in_module_loop
async def test_a_long_response_is_checked_on_its_tail(scorer: MathScorer) -> None:
    # Both boxes together would be the set {7, 3}; the tail holds only the final one.
    response = "First guess \\boxed{7}. " + "x" * 25_000 + " Final: \\boxed{3}"
    [result] = await scorer.score_batch([item("3", response)])
    assert result.value == 1.0
    assert result.reason == f"checked the last 20000 of {len(response)} characters"


@in_module_loop
async def test_a_hanging_item_times_out_without_holding_up_its_batch(quick: MathScorer) -> None:
    started = time.monotonic()
    results = await quick.score_batch(
        [item("42", "\\boxed{42}"), item("42", TOWER), item("1/2", "0.5"), item("7", "\\boxed{8}")]
    )
    assert time.monotonic() - started < 4.0
    assert [r.value for r in results] == [2.0, None, 2.0, -1.0]
    assert results[1].error_type == "verifier_timeout" and not results[1].cacheable
    assert "spent its CPU budget of 1s" in (results[1].error or "")
    assert results[0].cacheable and results[3].cacheable
    # The worker answered (its CPU timer): still usable, nothing to replace.
    assert quick.health()["ready"]
    [again] = await quick.score_batch([item("\\pi", "\\boxed{\\pi}")])
    assert again.value == 2.0


@in_module_loop
async def test_a_silent_worker_is_killed_and_replaced(quick: MathScorer) -> None:
    # SIGSTOP stands for a worker stuck where signals cannot reach (C code): it never answers.
    stopped = quick._pool.pids()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    results = await quick.score_batch([item("1", "\\boxed{1}"), item("2", "\\boxed{2}")])
    assert 5.4 < time.monotonic() - started < 9.0  # 4 x timeout_s + grace
    for result in results:
        # Stopped, it used no CPU: starved, not an expensive input. No verdict either way.
        assert (result.value, result.error_type) == (None, "overloaded")
        assert not result.cacheable
    await wait_ready(quick)
    assert not set(quick._pool.pids()) & set(stopped)
    results = await quick.score_batch([item("1", "\\boxed{1}"), item("2", "\\boxed{3}")])
    assert [r.value for r in results] == [2.0, -1.0]


@in_module_loop
async def test_a_worker_killed_under_an_item_is_replaced_and_the_item_tried_again(
    quick: MathScorer,
) -> None:
    await wait_ready(quick)
    victims = quick._pool.pids()
    tower = asyncio.ensure_future(quick.score_batch([item("42", TOWER)]))
    await asyncio.sleep(0.05)  # the tower takes one worker for a second...
    others = await quick.score_batch([item("1", "\\boxed{1}"), item("2", "\\boxed{2}")])
    assert [r.value for r in others] == [2.0, 2.0]  # ...the other serves these meanwhile
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    # Killed from outside (not the item's fault): retried on a replacement, where the
    # tower then meets its own timeout.
    [retried] = await tower
    assert retried.value is None and retried.error_type == "verifier_timeout"
    # The idle worker died too: the next items wait for replacements, they do not fail.
    results = await quick.score_batch([item("5", "\\boxed{5}"), item("6", "\\boxed{6}")])
    assert [r.value for r in results] == [2.0, 2.0]
    await wait_ready(quick)
    assert not set(quick._pool.pids()) & set(victims)


@in_module_loop
async def test_an_item_that_kills_two_workers_is_a_per_item_error(quick: MathScorer) -> None:
    await wait_ready(quick)
    first = set(quick._pool.pids())
    tower = asyncio.ensure_future(quick.score_batch([item("42", TOWER)]))
    await asyncio.sleep(0.05)
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (set(quick._pool.pids()) - first):  # the retry needs a replacement worker
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    second = set(quick._pool.pids()) - first
    for pid in second:
        os.kill(pid, signal.SIGKILL)
    [crashed] = await tower
    assert crashed.value is None and not crashed.cacheable
    assert (crashed.error or "").startswith("the math worker crashed (exit code -9)")
    while set(quick._pool.pids()) & (first | second):  # until the watcher replaced them all
        assert time.monotonic() < deadline + 30
        await asyncio.sleep(0.05)
    await wait_ready(quick)
    [fine] = await quick.score_batch([item("3", "\\boxed{3}")])
    assert fine.value == 2.0


@in_module_loop
async def test_health_counts_live_workers(scorer: MathScorer) -> None:
    assert scorer.health() == {"ready": True, "workers": 2}


def test_health_is_not_ready_before_setup() -> None:
    assert MathScorer("m", MathScorer.Options(workers=1)).health()["ready"] is False


def test_options_are_validated() -> None:
    with pytest.raises(pydantic.ValidationError):
        MathScorer.Options(timeout_s=0)
    with pytest.raises(pydantic.ValidationError):
        MathScorer.Options(workers=0)
    with pytest.raises(pydantic.ValidationError):
        MathScorer.Options(reward_correct=float("nan"))
    with pytest.raises(pydantic.ValidationError):
        MathScorer.Options.model_validate({"timeout": 3})


def test_every_option_changes_the_fingerprint() -> None:
    base = MathScorer("m", MathScorer.Options()).fingerprint()
    changed = [
        {"strict": False},
        {"float_rounding": 3},
        {"reward_wrong": -1.0},
        {"max_response_chars": 100},
        {"allow_set_relation_comp": True},
    ]
    prints = {MathScorer("m", MathScorer.Options(**c)).fingerprint() for c in changed}
    assert base not in prints and len(prints) == len(changed)
