"""``match``: compare the response (or an extracted part of it) with a target.

Modes:
- ``exact``: equal strings (``case_sensitive`` applies);
- ``normalized``: equal after case-folding, trimming, collapsing whitespace and dropping
  trailing punctuation, and (``strip_latex``) unwrapping ``\\boxed{…}`` and removing ``$``;
- ``contains``: the target occurs in the response;
- ``regex``: the target is a regular expression searched (or full-matched) in the response.

The target is the item's ``reference`` unless the config fixes one (``value`` for the
string modes, ``pattern`` for ``regex``); a fixed target makes the output independent
of ``reference``, so it leaves the cache key. ``extract`` (a regex with one group,
matched with DOTALL, last match wins) picks the part of the response to compare first.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import field_validator, model_validator

from referee.scorers.base import ScoreInput, ScoreResult, ScorerOptions, SyncScorer

__all__ = ["MatchScorer", "normalize_answer", "unbox"]

# ASCII and full-width (CJK) sentence punctuation.
_TRAILING_PUNCTUATION = ".,;:!?\u3002\uff0c\uff1b\uff1a\uff01\uff1f"
_BOXED = ("\\boxed{", "\\fbox{")


def unbox(text: str) -> str:
    """Replace each ``\\boxed{X}`` (nested braces allowed) with ``X``."""
    for opener in _BOXED:
        start = text.find(opener)
        while start != -1:
            depth, i = 1, start + len(opener)
            while i < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            if depth:  # unbalanced: leave the rest as it is
                break
            text = text[:start] + text[start + len(opener) : i - 1] + text[i:]
            start = text.find(opener, start)
    return text


def normalize_answer(text: str, *, strip_latex: bool = True) -> str:
    """Case-fold, collapse whitespace, strip trailing punctuation (and LaTeX wrappers)."""
    if strip_latex:
        text = unbox(text).replace("$", "")
    text = " ".join(text.casefold().split())
    return text.rstrip(_TRAILING_PUNCTUATION + " ")


def _compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


class MatchScorer(SyncScorer):
    kind = "match"
    reads = ("response", "reference")

    class Options(ScorerOptions):
        mode: Literal["exact", "normalized", "contains", "regex"] = "normalized"
        value: str | None = None
        """A fixed target for exact / normalized / contains (instead of ``reference``)."""
        pattern: str | None = None
        """A fixed regular expression for ``regex`` mode (instead of ``reference``)."""
        regex_match: Literal["search", "fullmatch"] = "search"
        extract: str | None = None
        """A regex with exactly one group applied to the response first; last match wins."""
        case_sensitive: bool = True
        strip_latex: bool = True
        reward_match: float = 1.0
        reward_miss: float = 0.0

        @field_validator("pattern", "extract")
        @classmethod
        def _compiles(cls, value: str | None) -> str | None:
            if value is not None:
                _compile(value)
            return value

        @field_validator("extract")
        @classmethod
        def _one_group(cls, value: str | None) -> str | None:
            if value is not None and re.compile(value).groups != 1:
                raise ValueError(f"`extract` must have exactly one capturing group: {value!r}")
            return value

        @field_validator("reward_match", "reward_miss")
        @classmethod
        def _finite(cls, value: float) -> float:
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            return value

        @model_validator(mode="after")
        def _target_fits_mode(self) -> MatchScorer.Options:
            if self.mode == "regex" and self.value is not None:
                raise ValueError("mode `regex` takes `pattern`, not `value`")
            if self.mode != "regex" and self.pattern is not None:
                raise ValueError(f"`pattern` is only for mode `regex` (mode is `{self.mode}`)")
            return self

    def __init__(self, name: str, options: ScorerOptions) -> None:
        if not isinstance(options, MatchScorer.Options):
            raise TypeError(f"{type(self).__name__} needs {type(self).__name__}.Options")
        super().__init__(name, options)
        self.opts = options
        self._flags = 0 if options.case_sensitive else re.IGNORECASE
        self._extract = _compile(options.extract, re.DOTALL) if options.extract else None
        self._pattern = (
            _compile(options.pattern, self._flags) if options.pattern is not None else None
        )

    def _fixed_target(self) -> bool:
        return self.opts.value is not None or self.opts.pattern is not None

    def cache_fields(self) -> tuple[str, ...]:
        return ("response",) if self._fixed_target() else self.reads

    def score_one(self, item: ScoreInput) -> ScoreResult:
        opts = self.opts
        target = opts.value if opts.mode != "regex" else opts.pattern
        if target is None:
            if item.reference is None:
                return ScoreResult.failed(
                    f"mode `{opts.mode}` compares with `reference`, which this item lacks",
                    error_type="missing_field",
                )
            target = item.reference
        text = item.response
        if self._extract is not None:
            found = self._extract.findall(text)
            if not found:
                return ScoreResult(value=opts.reward_miss, reason="nothing extracted")
            text = found[-1]
        try:
            ok = self._matches(text, target)
        except re.error as exc:
            return ScoreResult.failed(
                f"`reference` is not a valid regular expression: {exc}",
                error_type="invalid_reference",
            )
        return ScoreResult(value=opts.reward_match if ok else opts.reward_miss)

    def _matches(self, text: str, target: str) -> bool:
        mode = self.opts.mode
        if mode == "normalized":
            strip = self.opts.strip_latex
            return normalize_answer(text, strip_latex=strip) == normalize_answer(
                target, strip_latex=strip
            )
        if mode == "regex":
            pattern = self._pattern or re.compile(target, self._flags)  # re caches compiles
            if self.opts.regex_match == "fullmatch":
                return pattern.fullmatch(text) is not None
            return pattern.search(text) is not None
        if not self.opts.case_sensitive:
            text, target = text.casefold(), target.casefold()
        return text == target if mode == "exact" else target in text
