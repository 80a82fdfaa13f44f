"""``math``: is the response's final answer equivalent to the reference (the gold answer)?

Equivalence is math-verify's: boxed answers, LaTeX, fractions, percentages, sets,
intervals, equations (``x=3`` vs ``3``), symbolic identities. The reference is parsed as
LaTeX or a plain expression (a bare ``42`` or ``\\frac{1}{2}`` is read as if in ``$…$``);
the response is parsed preferring its ``\\boxed{}`` answer (all boxed answers together:
hedging with two boxes gives a set, which does not match a single gold).

A reference that math-verify extracts but cannot turn into an expression (``\\pm`` inside
a fraction, words, several named equations) is compared as math-verify compares it: as
text, equal to the response's extracted answer after the same LaTeX normalisation; the
result's reason says so. Text that is visibly broken (an unclosed ``{``, a trailing
operator, no letter or digit) is refused as ``invalid_reference``, as is a reference from
which nothing can be extracted: compared as text, such a reference would score every
answer wrong instead of saying that the gold answer is unusable.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

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

__all__ = ["Checked", "MathScorer", "check_answer"]

# The wall time a worker gets for an item, as a multiple of its CPU budget plus a grace for
# pipe and scheduling time: a backstop for a check stuck where signals do not reach it.
_WALL_FACTOR = 4.0
_GRACE_S = 1.5
# A reference "already in math mode": otherwise it is read as if wrapped in $…$.
_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")

# An operator left without its right operand: the sign of a truncated reference.
_DANGLING = ("+", "-", "*", "/", "^", "_", "=", "&", "\\")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]")

Verdict = Literal["correct", "wrong", "no_answer", "bad_reference", "timeout"]


class Checked(NamedTuple):
    """A worker's answer for one item (picklable)."""

    verdict: Verdict
    answer: str = ""
    """The response's extracted answer as text (for the reason)."""
    reference_text: str | None = None
    """Set when the reference parsed only to text, so it was compared as text."""
    problem: str = ""
    """Why the reference was refused (``bad_reference``)."""


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """The options that a worker process needs (picklable)."""

    timeout_s: float = 5.0
    float_rounding: int = 6
    numeric_precision: int = 15
    strict: bool = True
    allow_set_relation_comp: bool = False


def check_answer(settings: CheckSettings, request: tuple[str, str]) -> Checked:
    """Compare ``(gold, response)``; runs on a worker's main thread.

    The item's budget is ``timeout_s`` seconds of this process's CPU time (``ITIMER_PROF``),
    not wall time: a worker that waits for a core on a busy machine does not use it up, so
    only an input that is really expensive to check times out. math-verify's own wall-clock
    alarms are off.
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
        return Checked("timeout")
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _compare(settings: CheckSettings, gold: str, response: str) -> Checked:
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
    golds, problem = _read_reference(
        gold, lambda text: parse_or_empty(text, gold_config, "any_match")
    )
    if not golds:
        return Checked("bad_reference", problem=problem)
    textual = all(isinstance(g, str) for g in golds)
    reference_text = str(golds[0]) if textual else None
    preds = parse_or_empty(response, pred_config, "first_match")
    if not preds:
        return Checked("no_answer")
    answer = next((p for p in preds if isinstance(p, str)), "")
    # A text-only gold meets math-verify's own string comparison here: verify() compares
    # two strings by equality after strip(), and a string with an expression never.
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
                return Checked("correct", answer, reference_text)
        except Exception:  # a comparison sympy cannot do: try the next pair
            continue
    return Checked("wrong", answer, reference_text)


def _read_reference(
    gold: str, parse_gold: Callable[[str], list[object]]
) -> tuple[list[object], str]:
    """The reference's extracted answers (expressions, or text only) or ``[]`` and why.

    A bare reference is read as if in ``$…$``. Only when that gives nothing usable (no
    extraction, or broken text) is it parsed as written: parsed bare, math-verify may pick a
    fragment (``x = \\frac{1}{2}, x = …`` gives ``1/2``), so well-formed text read in
    ``$…$`` is kept as the whole answer rather than replaced by a fragment.
    """
    problem = "math-verify extracts nothing from it"
    candidates = [gold] if _DELIMITED.search(gold) else [f"${gold}$", gold]
    for text in candidates:
        found = parse_gold(text)
        if any(not isinstance(g, str) for g in found):
            return found, ""
        if found:
            broken = next(filter(None, (_broken_text(str(g)) for g in found)), None)
            if broken is None:
                return found, ""
            problem = broken
    return [], problem


def _broken_text(text: str) -> str | None:
    """Why ``text`` (a reference math-verify read only as text) is not a usable answer."""
    text = text.strip()
    depth = 0
    for token in _BRACE_OR_ESCAPE.findall(text):
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                return "it has a '}' that closes nothing"
    if depth:
        return "it has a '{' that is never closed"
    if not any(c.isalnum() for c in _COMMAND.sub("", text)):
        return "it has no letter or digit, only symbols"
    if text.endswith(_DANGLING):
        return f"it ends with {text[-1]!r}, an operator without its operand"
    return None


class MathScorer(Scorer):
    kind = "math"
    implementation_version = "3"  # 2: text-only references as text; 3: CPU-time budgets
    libraries = ("math-verify", "latex2sympy2_extended", "sympy", "antlr4-python3-runtime")
    reads = ("response", "reference")

    class Options(ScorerOptions):
        timeout_s: float = Field(default=5.0, gt=0, le=600)
        """Per-item budget in CPU seconds of the worker (a busy machine does not count)."""
        workers: int | None = Field(default=None, ge=1)
        """Worker processes; None = min(4, CPU count)."""
        reward_correct: FiniteFloat = 1.0
        """The value when the answer is equivalent to `reference`."""
        reward_wrong: FiniteFloat = 0.0
        """The value when it is not (or no answer is found)."""
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
        """Decimal places floats are rounded to before comparing (math-verify)."""
        numeric_precision: int = Field(default=15, ge=1)
        """Significant digits of numeric evaluation (math-verify)."""
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
        self._pool: WorkerPool[CheckSettings, tuple[str, str], Checked] = WorkerPool(
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
        response, notes = item.response, []
        if len(response) > opts.max_response_chars:
            notes.append(
                f"checked the last {opts.max_response_chars} of {len(response)} characters"
            )
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
        reply = outcome.reply
        if reply.verdict == "timeout":
            return ScoreResult.failed(
                _join(f"the math check spent its CPU budget of {opts.timeout_s:g}s", notes),
                "verifier_timeout",
            )
        if reply.verdict == "bad_reference":
            return ScoreResult.failed(
                f"cannot parse the reference {_clip(item.reference)} as a math answer: "
                f"{reply.problem}",
                error_type="invalid_reference",
            )
        if reply.verdict == "no_answer":
            return ScoreResult(
                value=opts.reward_wrong, reason=_join("no answer found in response", notes)
            )
        if reply.reference_text is not None:
            notes.insert(0, "compared as text: the reference parses only to text "
                            f"{_clip(reply.reference_text)}")  # fmt: skip
        if reply.verdict == "correct":
            return ScoreResult(value=opts.reward_correct, reason="; ".join(notes) or None)
        return ScoreResult(
            value=opts.reward_wrong,
            reason=_join(f"answer {_clip(reply.answer)} is not equivalent to the reference", notes),
        )


def _clip(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _join(reason: str, notes: list[str]) -> str:
    return f"{reason} ({'; '.join(notes)})" if notes else reason
