"""``math``: is the response's final answer equivalent to the reference (the gold answer)?

Equivalence is math-verify's: boxed answers, LaTeX, fractions, percentages, sets,
intervals, equations (``x=3`` vs ``3``), symbolic identities. The reference is parsed as
LaTeX or a plain expression (a bare ``42`` or ``\\frac{1}{2}`` is read as if in ``$…$``);
the response is parsed preferring its ``\\boxed{}`` answer (all boxed answers together:
hedging with two boxes gives a set, which does not match a single gold).

The checks run in worker processes (:mod:`referee.scorers.rules._mathpool`), each item under
a budget of ``timeout_s`` seconds of CPU time (a CPU-time timer, which a busy machine does not
run down). A worker that does not answer by ``_WALL_FACTOR`` times that in wall time (stuck
in C code, or starved of CPU) is killed and replaced. An item whose check spent its budget is
``failed`` (``verifier_timeout``, retryable); one whose worker was starved is ``failed``
(``overloaded``, retryable): never a reward, since no verdict was reached.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, FiniteFloat, field_validator

from referee.scorers.base import (
    ScoreInput,
    Scorer,
    ScoreResult,
    ScorerOptions,
    deadline_passed,
    past_deadline_result,
)
from referee.scorers.rules._mathpool import WorkerPool

__all__ = ["MathScorer", "check_answer"]

# The wall time a worker gets for an item, as a multiple of its CPU budget plus a grace for
# pipe and scheduling time: a backstop for a check stuck where signals do not reach it.
_WALL_FACTOR = 4.0
_GRACE_S = 1.5
# A reference "already in math mode": otherwise it is read as if wrapped in $…$.
_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")

Verdict = Literal["correct", "wrong", "no_answer", "bad_reference", "timeout"]


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """The options that a worker process needs (picklable)."""

    timeout_s: float = 5.0
    float_rounding: int = 6
    numeric_precision: int = 15
    strict: bool = True
    allow_set_relation_comp: bool = False


def check_answer(settings: CheckSettings, request: tuple[str, str]) -> tuple[Verdict, str]:
    """Compare ``(gold, response)``; runs on a worker's main thread.

    The item's budget is ``timeout_s`` seconds of this process's CPU time (``ITIMER_PROF``),
    not wall time: a worker that waits for a core on a busy machine does not use it up, so
    only an input that is really expensive to check times out. math-verify's own wall-clock
    alarms are off. Returns the verdict and the extracted answer text (for the reason).
    """
    import math_verify.grader
    import math_verify.parser
    from math_verify.errors import TimeoutException  # a BaseException: nothing swallows it

    # Their warning says to provide a time limit of our own: the CPU timer below is it.
    math_verify.grader.TIMEOUT_WARNING_SHOWN = math_verify.parser.TIMEOUT_WARNING_SHOWN = True

    def spent(signum: int, frame: object) -> None:
        raise TimeoutException("CPU budget spent")

    previous = signal.signal(signal.SIGPROF, spent)
    signal.setitimer(signal.ITIMER_PROF, settings.timeout_s)
    try:
        return _compare(settings, *request)
    except TimeoutException:
        return "timeout", ""
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _compare(settings: CheckSettings, gold: str, response: str) -> tuple[Verdict, str]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    def parse_or_empty(text: str, config: Sequence[object], mode: str) -> list[object]:
        try:
            found: list[object] = parse(
                text,
                extraction_config=config,
                extraction_mode=mode,
                parsing_timeout=None,  # the CPU timer bounds it
                raise_on_error=True,
            )
        except Exception:
            return []
        return found

    gold_config = [LatexExtractionConfig(), ExprExtractionConfig()]
    pred_config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    candidates = [gold] if _DELIMITED.search(gold) else [f"${gold}$", gold]
    golds: list[object] = []
    for text in candidates:
        golds = parse_or_empty(text, gold_config, "any_match")
        if any(not isinstance(g, str) for g in golds):
            break
    else:
        return "bad_reference", ""
    preds = parse_or_empty(response, pred_config, "first_match")
    if not preds:
        return "no_answer", ""
    answer = next((p for p in preds if isinstance(p, str)), "")
    for g, p in itertools.product(golds, preds):
        try:
            if verify(
                g,
                p,
                float_rounding=settings.float_rounding,
                numeric_precision=settings.numeric_precision,
                strict=settings.strict,
                allow_set_relation_comp=settings.allow_set_relation_comp,
                timeout_seconds=None,
                raise_on_error=True,
            ):
                return "correct", answer
        except Exception:  # a comparison sympy cannot do: try the next pair
            continue
    return "wrong", answer


class MathScorer(Scorer):
    kind = "math"
    libraries = ("math-verify", "latex2sympy2_extended", "sympy", "antlr4-python3-runtime")
    reads = ("response", "reference")

    class Options(ScorerOptions):
        timeout_s: float = Field(default=5.0, gt=0, le=600)
        """Per-item budget in CPU seconds of the worker (a busy machine does not count)."""
        workers: int | None = Field(default=None, ge=1)
        """Worker processes; None = min(4, CPU count)."""
        reward_correct: FiniteFloat = 1.0
        reward_wrong: FiniteFloat = 0.0
        reward_timeout: None = Field(
            default=None,
            description="Removed: a check that runs out of time is now a failed, retryable "
            "item (no reward), not a number that looks like a verdict.",
            exclude=True,
        )

        @field_validator("reward_timeout", mode="before")
        @classmethod
        def _removed(cls, value: object) -> None:
            if value is not None:
                raise ValueError(
                    "reward_timeout was removed: a math check that runs out of time is now a "
                    "failed, retryable item with no reward (see docs/concepts/outcomes.md); "
                    "delete this option"
                )
            return None

        float_rounding: int = Field(default=6, ge=0)
        numeric_precision: int = Field(default=15, ge=1)
        strict: bool = True
        """Variables must match by name; sets and tuples are different things."""
        allow_set_relation_comp: bool = False
        """Compare sets with relations (``(1, 2)`` vs ``1 < x < 2``) in both directions."""
        max_response_chars: int = Field(default=20_000, ge=1)
        """Longer responses are checked on their last this-many characters."""

    def __init__(self, name: str, options: ScorerOptions) -> None:
        if not isinstance(options, MathScorer.Options):
            raise TypeError(f"{type(self).__name__} needs {type(self).__name__}.Options")
        super().__init__(name, options)
        self.opts = options
        self._settings = CheckSettings(
            timeout_s=options.timeout_s,
            float_rounding=options.float_rounding,
            numeric_precision=options.numeric_precision,
            strict=options.strict,
            allow_set_relation_comp=options.allow_set_relation_comp,
        )
        workers = options.workers or min(4, os.cpu_count() or 1)
        self._pool: WorkerPool[CheckSettings, tuple[str, str], tuple[Verdict, str]] = WorkerPool(
            check_answer, self._settings, warmup=("\\frac{1}{2}", "\\boxed{0.5}"), size=workers
        )
        self._started = False

    async def setup(self) -> None:
        await self._pool.start()
        self._started = True

    async def close(self) -> None:
        self._started = False
        await self._pool.close()

    def health(self) -> dict[str, object]:
        alive = self._pool.alive() if self._started else 0
        return {"ready": self._started and alive == self._pool.size, "workers": alive}

    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        return list(await asyncio.gather(*(self._score(item) for item in items)))

    async def _score(self, item: ScoreInput) -> ScoreResult:
        opts = self.opts
        if item.reference is None:
            return ScoreResult.failed(
                "the math scorer needs `reference` (the gold answer)", error_type="missing_field"
            )
        response, note = item.response, None
        if len(response) > opts.max_response_chars:
            note = f"checked the last {opts.max_response_chars} of {len(response)} characters"
            response = response[-opts.max_response_chars :]
        if deadline_passed():  # checked after waiting for a worker, before using one
            return past_deadline_result()
        wall = opts.timeout_s * _WALL_FACTOR + _GRACE_S
        outcome = await self._pool.call((item.reference, response), wall)
        if outcome.status == "crashed":
            return ScoreResult.failed(
                f"the math worker crashed ({outcome.detail}); it was restarted", "worker_crashed"
            )
        if outcome.status == "error":
            return ScoreResult.failed(f"the math check failed: {outcome.detail}")
        if outcome.status == "timeout":  # the wall backstop killed the worker
            used = outcome.cpu_s
            if used is not None and used < opts.timeout_s:
                return ScoreResult.failed(
                    f"the math check got {used:.2f}s of CPU in {wall:g}s (budget "
                    f"{opts.timeout_s:g}s): the server was too busy to finish it", "overloaded",
                )  # fmt: skip
            return ScoreResult.failed(
                f"the math check did not finish within {wall:g}s (stuck past its CPU budget "
                f"of {opts.timeout_s:g}s)", "verifier_timeout",
            )  # fmt: skip
        assert outcome.reply is not None
        verdict, answer = outcome.reply
        if verdict == "timeout":
            return ScoreResult.failed(
                _join(f"the math check spent its CPU budget of {opts.timeout_s:g}s", note),
                "verifier_timeout",
            )
        if verdict == "bad_reference":
            return ScoreResult.failed(
                f"cannot parse the reference {_clip(item.reference)} as a math answer",
                error_type="invalid_reference",
            )
        if verdict == "no_answer":
            return ScoreResult(
                value=opts.reward_wrong, reason=_join("no answer found in response", note)
            )
        if verdict == "correct":
            return ScoreResult(value=opts.reward_correct, reason=note)
        return ScoreResult(
            value=opts.reward_wrong,
            reason=_join(f"answer {_clip(answer)} is not equivalent to the reference", note),
        )


def _clip(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _join(reason: str, note: str | None) -> str:
    return f"{reason} ({note})" if note else reason
