"""``repetition``: the n-gram repetition penalty of open-r1 / "Demystifying Long CoT".

The response is lower-cased and split into words (whitespace) or characters; with
``total`` n-grams of size ``ngram_size`` of which ``unique`` are distinct,
``reward = (1 - unique / total) * max_penalty``: 0 for no repetition, approaching
``max_penalty`` (≤ 0) as the text repeats itself. A response with fewer units than
``ngram_size`` scores 0. The aspect ``repeated_fraction`` is ``1 - unique / total``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, FiniteFloat

from referee.scorers.base import ScoreInput, ScoreResult, ScorerOptions, SyncScorer

__all__ = ["RepetitionScorer", "repeated_fraction"]


def repeated_fraction(units: list[str], n: int) -> float:
    """``1 - unique / total`` over the n-grams of ``units``; 0.0 when there are none."""
    total = len(units) - n + 1
    if total <= 0:
        return 0.0
    unique = len({tuple(units[i : i + n]) for i in range(total)})
    return 1.0 - unique / total


class RepetitionScorer(SyncScorer):
    kind = "repetition"
    reads = ("response",)

    class Options(ScorerOptions):
        ngram_size: int = Field(default=3, ge=1, le=64)
        """n of the n-grams counted."""
        max_penalty: FiniteFloat = Field(default=-1.0, le=0)
        """The value when every n-gram repeats: max_penalty * (1 - unique/total n-grams)."""
        unit: Literal["words", "chars"] = "words"
        """n-grams of words or of characters."""

    def __init__(self, name: str, options: ScorerOptions) -> None:
        if not isinstance(options, RepetitionScorer.Options):
            raise TypeError(f"{type(self).__name__} needs {type(self).__name__}.Options")
        super().__init__(name, options)
        self.opts = options

    def score_one(self, item: ScoreInput) -> ScoreResult:
        text = item.response.lower()
        units = text.split() if self.opts.unit == "words" else list(text)
        fraction = repeated_fraction(units, self.opts.ngram_size)
        # `+ 0.0` turns -0.0 (no repetition times a negative penalty) into 0.0.
        value = fraction * self.opts.max_penalty + 0.0
        return ScoreResult(value=value, aspects={"repeated_fraction": fraction})
