"""``format``: does the response have the required shape?

Modes:
- ``think_answer``: exactly ``<think>…</think>`` then ``<answer>…</answer>``, whitespace
  around and between allowed, each tag exactly once, a non-empty answer (tag names
  configurable);
- ``regex``: ``pattern`` full-matches (or, with ``regex_match: search``, occurs in) the
  response; DOTALL by default so ``.`` spans lines;
- ``json``: the response — or the content of its last `````json`` fenced block — parses as
  JSON and, when ``schema`` is given, validates against it; the reason names the path of
  the error.

The value is ``reward_ok`` or ``reward_bad``; a bad response carries a reason.

``think_answer`` and ``json`` read the whole response in linear time (string searches, no
backtracking). ``pattern`` runs on the ``regex`` engine, which releases the GIL while
matching, with a budget of ``regex_timeout_s`` seconds of its own CPU time (a busy server
cannot trip it; see :mod:`referee.scorers._cpu_limit`): a match that spends it, or cannot
get it in time, leaves the item ``failed`` and retryable, never ``reward_bad``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import regex
from pydantic import ConfigDict, Field, FiniteFloat, field_validator, model_validator

from referee.scorers._cpu_limit import (
    CpuBudgetSpent,
    VerifierStarved,
    cpu_limited,
    limit_failure,
)
from referee.scorers.base import ScoreInput, ScoreResult, ScorerOptions, SyncScorer

__all__ = ["FormatScorer"]

_TAG_NAME = regex.compile(r"[A-Za-z][\w.-]*")
_JSON_FENCE_OPENING = regex.compile(r"```json[ \t]*\r?\n", regex.IGNORECASE)


def _last_json_fence(text: str) -> str | None:
    """The content of the last `````json`` fenced block, fences paired left to right."""
    content, position = None, 0
    while (opening := _JSON_FENCE_OPENING.search(text, position)) is not None:
        closing = text.find("```", opening.end())
        if closing == -1:
            break
        content, position = text[opening.end() : closing], closing + 3
    return content


class FormatScorer(SyncScorer):
    kind = "format"
    libraries = ("regex", "jsonschema")
    reads = ("response",)

    class Options(ScorerOptions):
        mode: Literal["think_answer", "regex", "json"] = "think_answer"
        """think_answer: <think>…</think> then <answer>…</answer>; regex: `pattern` matches; json:
        the response (or its last ```json block) parses, and validates against `schema` when
        given."""
        think_tag: str = "think"
        """Name of the reasoning tag (think_answer)."""
        answer_tag: str = "answer"
        """Name of the answer tag (think_answer)."""
        pattern: str | None = None
        """The regular expression of mode `regex`."""
        regex_match: Literal["fullmatch", "search"] = "fullmatch"
        """fullmatch: the whole response must match; search: the pattern occurs in it."""
        dotall: bool = True
        """`.` matches newlines too."""
        regex_timeout_s: FiniteFloat = Field(default=0.5, gt=0)
        """CPU seconds one match may spend (a busy server does not count against it)."""
        """Deadline of the ``pattern`` match on one response."""
        json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
        """A JSON Schema (any draft; ``$schema`` picks it, else the latest)."""
        reward_ok: FiniteFloat = 1.0
        """The value when the response has the format."""
        reward_bad: FiniteFloat = 0.0
        """The value when it does not (with a reason in `info`)."""

        model_config = ConfigDict(populate_by_name=True)

        @field_validator("think_tag", "answer_tag")
        @classmethod
        def _tag_name(cls, value: str) -> str:
            if not _TAG_NAME.fullmatch(value):
                raise ValueError(f"not a tag name (letters, digits, _ . -): {value!r}")
            return value

        @field_validator("pattern")
        @classmethod
        def _compiles(cls, value: str | None) -> str | None:
            if value is not None:
                try:
                    regex.compile(value)
                except regex.error as exc:
                    raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
            return value

        @field_validator("json_schema")
        @classmethod
        def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
            if value is not None:
                from jsonschema.exceptions import SchemaError
                from jsonschema.validators import validator_for

                try:
                    validator_for(value).check_schema(value)
                except SchemaError as exc:
                    where = exc.json_path if exc.path else "the schema root"
                    raise ValueError(f"invalid JSON Schema at {where}: {exc.message}") from None
            return value

        @model_validator(mode="after")
        def _options_fit_mode(self) -> FormatScorer.Options:
            if self.mode == "regex" and self.pattern is None:
                raise ValueError("mode `regex` needs `pattern`")
            if self.mode != "regex" and self.pattern is not None:
                raise ValueError(f"`pattern` is only for mode `regex` (mode is `{self.mode}`)")
            if self.mode != "json" and self.json_schema is not None:
                raise ValueError(f"`schema` is only for mode `json` (mode is `{self.mode}`)")
            if self.think_tag == self.answer_tag:
                raise ValueError("`think_tag` and `answer_tag` must differ")
            return self

    def __init__(self, name: str, options: ScorerOptions) -> None:
        if not isinstance(options, FormatScorer.Options):
            raise TypeError(f"{type(self).__name__} needs {type(self).__name__}.Options")
        super().__init__(name, options)
        self.opts = options
        self._pattern = (
            regex.compile(options.pattern, regex.DOTALL if options.dotall else 0)
            if options.pattern is not None
            else None
        )
        self._validator: Any = None
        if options.json_schema is not None:
            from jsonschema.validators import validator_for

            schema = options.json_schema
            self._validator = validator_for(schema)(schema)

    def runs_inline(self, items: Sequence[ScoreInput]) -> bool:
        # A pattern may spend its whole timeout on a few characters, and a JSON Schema's
        # `pattern` keyword runs on stdlib re: only think_answer runs on the event loop.
        return self.opts.mode == "think_answer" and super().runs_inline(items)

    def score_one(self, item: ScoreInput) -> ScoreResult:
        if self.opts.mode == "think_answer":
            problem = self._think_answer_problem(item.response)
        elif self.opts.mode == "regex":
            try:
                problem = self._regex_problem(item.response)
            except (CpuBudgetSpent, VerifierStarved) as exc:
                return limit_failure(exc, "the `pattern` check")
        else:
            problem = self._json_problem(item.response)
        if problem is None:
            return ScoreResult(value=self.opts.reward_ok)
        return ScoreResult(value=self.opts.reward_bad, reason=problem)

    def _think_answer_problem(self, text: str) -> str | None:
        think, answer = self.opts.think_tag, self.opts.answer_tag
        for tag in (think, answer):
            opens, closes = text.count(f"<{tag}>"), text.count(f"</{tag}>")
            if opens != 1 or closes != 1:
                return f"expected one <{tag}> and one </{tag}>, found {opens} and {closes}"
        # Each tag occurs once (no tag is a substring of another, all end with ">"): the
        # layout holds when they come in order with only whitespace outside the elements.
        marks = (f"<{think}>", f"</{think}>", f"<{answer}>", f"</{answer}>")
        starts = [text.find(mark) for mark in marks]
        ends = [start + len(mark) for start, mark in zip(starts, marks, strict=True)]
        outside = (text[: starts[0]], text[ends[1] : starts[2]], text[ends[3] :])
        in_order = starts[0] < starts[1] < starts[2] < starts[3]
        if not in_order or any(gap.strip() for gap in outside):
            return f"expected <{think}>…</{think}> then <{answer}>…</{answer}> and nothing else"
        if not text[ends[2] : starts[3]].strip():
            return f"empty <{answer}>"
        return None

    def _regex_problem(self, text: str) -> str | None:
        assert self._pattern is not None
        pattern, budget = self._pattern, self.opts.regex_timeout_s
        if self.opts.regex_match == "fullmatch":
            found = cpu_limited(lambda wall: pattern.fullmatch(text, timeout=wall), budget)
            return None if found else "response does not match `pattern`"
        found = cpu_limited(lambda wall: pattern.search(text, timeout=wall), budget)
        return None if found else "`pattern` not found in response"

    def _json_problem(self, text: str) -> str | None:
        fenced = _last_json_fence(text)
        source = fenced if fenced is not None else text
        try:
            document = json.loads(source)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge ints, deep nesting
            return f"invalid JSON: {exc}"
        if self._validator is None:
            return None
        from jsonschema.exceptions import best_match

        error = best_match(self._validator.iter_errors(document))
        if error is None:
            return None
        return f"schema violation at {error.json_path}: {error.message}"
