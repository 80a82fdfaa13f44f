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

Bounded work, since responses and references come from clients:
- only the last ``max_chars`` characters of the response are examined (answers come
  last); the reason says so when the response was longer;
- patterns run on the ``regex`` engine, which releases the GIL while matching, with a
  budget of ``regex_timeout_s`` seconds of CPU time (not wall time: a busy server cannot
  trip it, see :mod:`referee.scorers._cpu_limit`); a match that spends it, or cannot get it in time,
  leaves the item ``failed`` and retryable, never ``reward_miss``;
- a ``reference`` used as a pattern is refused (``invalid_reference``) when longer than
  ``max_reference_pattern_chars``, when it does not compile, or when preparing it would
  stall the server outside the timeout: counted repeats that unroll past
  ``_MAX_UNROLLED`` items (``regex`` compiles ``x{1000}`` as a thousand nodes, so
  ``((a{1000}){1000}){1000}`` needs tens of gigabytes), or more than ``_MAX_LITERAL``
  literal characters in a row (see there).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import regex
from pydantic import Field, FiniteFloat, field_validator, model_validator

from referee.scorers._cpu_limit import (
    CpuBudgetSpent,
    VerifierStarved,
    cpu_limited,
    limit_failure,
)
from referee.scorers.base import ScoreInput, ScoreResult, ScorerOptions, SyncScorer

__all__ = ["MatchScorer", "normalize_answer", "unbox"]

# ASCII and full-width (CJK) sentence punctuation.
_TRAILING_PUNCTUATION = ".,;:!?\u3002\uff0c\uff1b\uff1a\uff01\uff1f"
_BOXED = ("\\boxed{", "\\fbox{")
_BOX_TOKENS = {opener: regex.compile(regex.escape(opener) + r"|[{}]") for opener in _BOXED}
# Counted repeats: {n}, {n,}, {,m}, {n,m}.
_COUNTED = regex.compile(r"\{(\d*)(?:,(\d*))?\}")
# What follows "(" before a group's content: ?:, ?=, ?<!, ?P<name>, ?i:, ?i) …
_GROUP_PREFIX = regex.compile(r"\?(?:P?<\w*>|<[=!]|[=!>|:]|[\w^-]*[:)]?)")
_MAX_UNROLLED = 10_000
# On a first match, regex builds search tables for a literal in time growing with the cube
# of its length, holding the GIL and outside the timeout: "a" * 1000 takes 0.5 s.
_MAX_LITERAL = 256


def _unbox_one(text: str, opener: str) -> str:
    """Unwrap each closed ``opener…}``; from the first unclosed one on, leave the text."""
    open_braces: list[int] = []  # per open brace: where its box starts, or -1 (plain brace)
    boxes: list[tuple[int, int]] = []  # (start of the opener, its closing brace)
    for token in _BOX_TOKENS[opener].finditer(text):
        if token.group() == "{":
            open_braces.append(-1)
        elif token.group() == "}":
            if open_braces and (start := open_braces.pop()) >= 0:
                boxes.append((start, token.start()))
        else:
            open_braces.append(token.start())
    # A box holding the first unclosed opener would be unclosed too: those kept end before it.
    unclosed = min((start for start in open_braces if start >= 0), default=len(text))
    cuts = sorted(
        cut
        for start, close in boxes
        if start < unclosed
        for cut in ((start, start + len(opener)), (close, close + 1))
    )
    parts: list[str] = []
    position = 0
    for begin, end in cuts:
        parts.append(text[position:begin])
        position = end
    parts.append(text[position:])
    return "".join(parts)


def unbox(text: str) -> str:
    """Replace each ``\\boxed{X}`` (nested braces allowed) with ``X``, in linear time."""
    for opener in _BOXED:
        if opener in text:
            text = _unbox_one(text, opener)
    return text


def normalize_answer(text: str, *, strip_latex: bool = True) -> str:
    """Case-fold, collapse whitespace, strip trailing punctuation (and LaTeX wrappers)."""
    if strip_latex:
        text = unbox(text).replace("$", "")
    text = " ".join(text.casefold().split())
    return text.rstrip(_TRAILING_PUNCTUATION + " ")


def _compile(pattern: str, flags: int = 0) -> Any:
    try:
        return regex.compile(pattern, flags)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def _pattern_costs(pattern: str) -> tuple[int, int]:
    """What makes ``regex`` slow to prepare ``pattern``, from its text: about how many
    items it builds once counted repeats are unrolled (an atom counts 1, a group the sum of
    its content, ``x{n,m}`` multiplies what it repeats by its largest bound), and the
    longest stretch of literal characters. Both over-estimate, never under-estimate."""
    levels: list[list[int]] = [[]]  # per open group: the sizes of its atoms so far
    i = run = longest = 0
    while i < len(pattern):
        char, atoms = pattern[i], levels[-1]
        counted = _COUNTED.match(pattern, i) if char == "{" and atoms else None
        literal = counted is None and (char == "\\" or char not in "[](){}|*+?^$.")
        run = run + 1 if literal else 0
        longest = max(longest, run)
        if counted is not None:
            low, high = counted.group(1), counted.group(2)
            atoms[-1] *= max(int(low or 0), int(high or 0), 1)
            i = counted.end()
        elif char == "\\":
            atoms.append(1)
            i += 2
        elif char == "[":  # a set counts 1: skip to its closing "]"
            i += 2 if pattern.startswith("[^", i) else 1
            i += pattern.startswith("]", i)
            while i < len(pattern) and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            atoms.append(1)
            i += 1
        elif char == "(":
            prefix = _GROUP_PREFIX.match(pattern, i + 1)
            i = prefix.end() if prefix is not None else i + 1
            if not pattern.endswith(")", 0, i):  # not a group-less "(?i)"
                levels.append([])
        elif char == ")" and len(levels) > 1:
            inner = levels.pop()
            levels[-1].append(max(1, sum(inner)))
            i += 1
        else:
            if char not in "*+?|":
                atoms.append(1)
            i += 1
    return sum(sum(atoms) for atoms in levels), longest


@functools.lru_cache(maxsize=32)
def _compile_untrusted(pattern: str, flags: int) -> Any:
    """Compile a pattern from a request, or raise ValueError saying why not. Kept in this
    small cache only, not in ``regex``'s own (500 patterns)."""
    size, literal = _pattern_costs(pattern)
    if size > _MAX_UNROLLED:
        raise ValueError(
            f"its counted repeats unroll to about {size} items (at most {_MAX_UNROLLED})"
        )
    if literal > _MAX_LITERAL:
        raise ValueError(f"it has {literal} literal characters in a row (at most {_MAX_LITERAL})")
    try:
        return regex.compile(pattern, flags, cache_pattern=False)
    except Exception as exc:  # regex.error, RecursionError (deep nesting), …
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


class MatchScorer(SyncScorer):
    kind = "match"
    libraries = ("regex",)
    reads = ("response", "reference")

    class Options(ScorerOptions):
        mode: Literal["exact", "normalized", "contains", "regex"] = "normalized"
        """exact: equal strings; normalized: equal after case-folding, collapsing whitespace,
        stripping trailing punctuation (and LaTeX, see strip_latex); contains: the target occurs
        in the response; regex: the target is a regular expression."""
        value: str | None = None
        """A fixed target for exact / normalized / contains (instead of ``reference``)."""
        pattern: str | None = None
        """A fixed regular expression for ``regex`` mode (instead of ``reference``)."""
        regex_match: Literal["search", "fullmatch"] = "search"
        """regex mode: search (occurs anywhere) or fullmatch (the whole text)."""
        extract: str | None = None
        """A regex with exactly one group applied to the response first; last match wins."""
        case_sensitive: bool = True
        """exact, contains and regex modes: compare case-sensitively (normalized always folds
        case)."""
        strip_latex: bool = True
        """normalized mode: unwrap \\boxed{…} and remove `$` before comparing."""
        reward_match: FiniteFloat = 1.0
        """The value on a match."""
        reward_miss: FiniteFloat = 0.0
        """The value otherwise."""
        max_chars: int | None = Field(default=20_000, gt=0)
        """Only the last ``max_chars`` characters of the response are examined (null: all)."""
        regex_timeout_s: FiniteFloat = Field(default=0.5, gt=0)
        """CPU seconds each regex match (``extract``, ``pattern`` or the reference) may
        spend; a busy server does not count against it."""
        max_reference_pattern_chars: int = Field(default=1000, gt=0)
        """The longest ``reference`` accepted as a pattern in ``regex`` mode."""

        @field_validator("pattern", "extract")
        @classmethod
        def _compiles(cls, value: str | None) -> str | None:
            if value is not None:
                _compile(value)
            return value

        @field_validator("extract")
        @classmethod
        def _one_group(cls, value: str | None) -> str | None:
            if value is not None and _compile(value).groups != 1:
                raise ValueError(f"`extract` must have exactly one capturing group: {value!r}")
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
        self._flags = 0 if options.case_sensitive else regex.IGNORECASE
        self._extract = _compile(options.extract, regex.DOTALL) if options.extract else None
        self._pattern = (
            _compile(options.pattern, self._flags) if options.pattern is not None else None
        )

    def _fixed_target(self) -> bool:
        return self.opts.value is not None or self.opts.pattern is not None

    def _reference_is_pattern(self) -> bool:
        return self.opts.mode == "regex" and self.opts.pattern is None

    def cache_fields(self) -> tuple[str, ...]:
        return ("response",) if self._fixed_target() else self.reads

    def runs_inline(self, items: Sequence[ScoreInput]) -> bool:
        # Any pattern (a request's, `extract`, a fixed one) may spend its whole timeout on
        # a few characters: only pattern-free modes run on the event loop.
        regex_free = self.opts.mode != "regex" and self.opts.extract is None
        return regex_free and super().runs_inline(items)

    def score_one(self, item: ScoreInput) -> ScoreResult:
        opts = self.opts
        target = opts.value if opts.mode != "regex" else opts.pattern
        pattern = self._pattern
        if target is None:
            if item.reference is None:
                return ScoreResult.failed(
                    f"mode `{opts.mode}` compares with `reference`, which this item lacks",
                    error_type="missing_field",
                )
            target = item.reference
            if self._reference_is_pattern():
                try:
                    pattern = self._reference_pattern(target)
                except ValueError as exc:
                    return ScoreResult.failed(
                        f"`reference` is not a usable regular expression: {exc}",
                        error_type="invalid_reference",
                    )
        text, note = item.response, None
        if opts.max_chars is not None and len(text) > opts.max_chars:
            note = f"examined the last {opts.max_chars} of {len(text)} characters"
            text = text[-opts.max_chars :]
        try:
            if self._extract is not None:
                extract, whole = self._extract, text
                found = cpu_limited(
                    lambda wall: extract.findall(whole, timeout=wall), opts.regex_timeout_s
                )
                if not found:
                    return self._result(False, "nothing extracted", note)
                text = found[-1]
            ok = self._matches(text, target, pattern)
        except (CpuBudgetSpent, VerifierStarved) as exc:
            return limit_failure(exc, "the regex check")
        return self._result(ok, None, note)

    def _reference_pattern(self, reference: str) -> Any:
        limit = self.opts.max_reference_pattern_chars
        if len(reference) > limit:
            raise ValueError(f"{len(reference)} characters long (at most {limit})")
        return _compile_untrusted(reference, self._flags)

    def _result(self, ok: bool, reason: str | None, note: str | None) -> ScoreResult:
        value = self.opts.reward_match if ok else self.opts.reward_miss
        return ScoreResult(value=value, reason="; ".join(filter(None, (reason, note))) or None)

    def _matches(self, text: str, target: str, pattern: Any) -> bool:
        mode = self.opts.mode
        if mode == "normalized":
            strip = self.opts.strip_latex
            return normalize_answer(text, strip_latex=strip) == normalize_answer(
                target, strip_latex=strip
            )
        if mode == "regex":
            budget = self.opts.regex_timeout_s
            if self.opts.regex_match == "fullmatch":
                return cpu_limited(lambda w: pattern.fullmatch(text, timeout=w), budget) is not None
            return cpu_limited(lambda w: pattern.search(text, timeout=w), budget) is not None
        if not self.opts.case_sensitive:
            text, target = text.casefold(), target.casefold()
        return text == target if mode == "exact" else target in text
