"""A regex time limit that counts this check's own CPU time, so a busy server cannot trip it.

The ``regex`` engine's ``timeout`` counts the CPU time of the whole *process* (``clock()``),
all threads together. A server scoring many items at once (the worker threads matching
other items, the event loop parsing JSON) runs that clock down for every match in flight,
so a match that needs a millisecond could "time out" (measured: with three busy matching
threads a 50 ms limit tripped on a 15 ms match). :func:`cpu_limited` runs the match with
the engine's timeout and, when that fires, looks at the CPU time the matching thread itself
spent (``time.thread_time``): a match that spent its budget is pathological
(:class:`CpuBudgetSpent`); one that did not was crowded out, and is run again with twice the
allowance, up to ``max_allowance_factor`` times the budget and never past the batch's
deadline (then :class:`VerifierStarved`). Either way the item has no verdict: the scorer
answers it ``failed`` and retryable, never with a reward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from referee.scorers.base import BATCH_DEADLINE, ScoreResult

__all__ = ["CpuBudgetSpent", "VerifierStarved", "cpu_limited", "limit_failure"]

T = TypeVar("T")

# The share of the budget a timed-out attempt must have spent on CPU to count as spent:
# thread CPU time falls a little short of wall time even on an idle machine.
_SPENT_SHARE = 0.9


class CpuBudgetSpent(Exception):
    """The check used its whole CPU budget: the input is pathological for it."""

    def __init__(self, budget_s: float, used_s: float) -> None:
        super().__init__(f"spent its CPU budget ({used_s:.2f}s of {budget_s:g}s)")
        self.budget_s, self.used_s = budget_s, used_s


class VerifierStarved(Exception):
    """The check could not spend its CPU budget within its allowance (a busy server)."""

    def __init__(self, budget_s: float, used_s: float, allowance_s: float) -> None:
        super().__init__(
            f"got {used_s:.3f}s of CPU while the process used {allowance_s:.2f}s (budget "
            f"{budget_s:g}s): the server was too busy to finish the check"
        )


def cpu_limited(
    call: Callable[[float], T], budget_s: float, *, max_allowance_factor: float = 64.0
) -> T:
    """``call(timeout_s)`` (a ``regex`` match given ``timeout=``) under a budget of this
    thread's CPU time."""
    wall = budget_s  # the engine's timeout: process CPU time (or, for other calls, wall time)
    ceiling = budget_s * max_allowance_factor
    while True:
        started = time.thread_time()
        try:
            return call(wall)
        except TimeoutError:
            used = time.thread_time() - started
        if used >= _SPENT_SHARE * budget_s:
            raise CpuBudgetSpent(budget_s, used)
        deadline = BATCH_DEADLINE.get()
        left = None if deadline is None else deadline - time.monotonic()
        if wall >= ceiling or (left is not None and left <= 0):
            raise VerifierStarved(budget_s, used, wall)
        wall = min(wall * 2, ceiling) if left is None else min(wall * 2, ceiling, left)


def limit_failure(exc: CpuBudgetSpent | VerifierStarved, what: str) -> ScoreResult:
    """The item's result when a limited check could not finish: failed, retryable."""
    kind = "verifier_timeout" if isinstance(exc, CpuBudgetSpent) else "overloaded"
    return ScoreResult.failed(f"{what} {exc}", kind)
