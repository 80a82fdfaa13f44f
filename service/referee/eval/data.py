"""Labelled evaluation data: preference pairs or best-of-N sets, from JSONL or Parquet.

A preference pair (RewardBench, RM-Bench): ``prompt``, ``chosen``, ``rejected``, and
optionally ``subset``, ``reference`` (the gold answer verifiers compare with) and ``id``.
A best-of-N set: ``prompt``, ``responses`` (two or more), and either ``correct`` (one
boolean per response) or ``scores`` (one graded label per response, higher is better),
with the same optional fields. One format per file. A bad line stops the load with its
line number and what is wrong, unless ``skip_bad`` is set: then it is counted and listed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "BadLine",
    "BestOfNSet",
    "EvalData",
    "EvalDataError",
    "Format",
    "PreferencePair",
    "load_eval_data",
]

Format = Literal["pairs", "best_of_n"]
_OPTIONAL = ("id", "subset", "reference")
_PAIR_FIELDS = {"prompt", "chosen", "rejected", *_OPTIONAL}
_BON_FIELDS = {"prompt", "responses", "correct", "scores", *_OPTIONAL}


class EvalDataError(ValueError):
    """A line of an eval file that cannot be used: where it is and what to fix."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True)
class PreferencePair:
    line: int
    id: str
    prompt: str
    chosen: str
    rejected: str
    subset: str = "all"
    reference: str | None = None


@dataclass(frozen=True)
class BestOfNSet:
    line: int
    id: str
    prompt: str
    responses: tuple[str, ...]
    labels: tuple[float, ...]  # 1/0 for `correct`, the grades for `scores`
    graded: bool  # labels came from `scores`
    subset: str = "all"
    reference: str | None = None


@dataclass(frozen=True)
class BadLine:
    line: int
    message: str


@dataclass
class EvalData:
    path: Path
    format: Format
    pairs: list[PreferencePair] = field(default_factory=list)
    sets: list[BestOfNSet] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)

    @property
    def examples(self) -> list[PreferencePair] | list[BestOfNSet]:
        return self.pairs if self.format == "pairs" else self.sets


def _text(record: dict[str, object], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise ValueError(f"`{name}` must be a string; it is {got}")
    return value


def _optional_text(record: dict[str, object], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"`{name}` must be a string or a number; it is a {type(value).__name__}")


def _format_of(record: dict[str, object]) -> Format:
    if "chosen" in record or "rejected" in record:
        if "responses" in record:
            raise ValueError("has both `chosen`/`rejected` (a pair) and `responses` (best-of-N)")
        return "pairs"
    if "responses" in record:
        return "best_of_n"
    raise ValueError(
        "neither a preference pair (prompt, chosen, rejected) nor a best-of-N set "
        f"(prompt, responses, correct or scores); its fields: {sorted(record) or 'none'}"
    )


def _pair(line: int, record: dict[str, object]) -> PreferencePair:
    unknown = sorted(set(record) - _PAIR_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; a pair has {sorted(_PAIR_FIELDS)}")
    return PreferencePair(
        line=line,
        id=_optional_text(record, "id") or f"line{line}",
        prompt=_text(record, "prompt"),
        chosen=_text(record, "chosen"),
        rejected=_text(record, "rejected"),
        subset=_optional_text(record, "subset") or "all",
        reference=_optional_text(record, "reference"),
    )


def _labels(record: dict[str, object], n: int) -> tuple[tuple[float, ...], bool]:
    correct, scores = record.get("correct"), record.get("scores")
    if (correct is None) == (scores is None):
        raise ValueError("give exactly one of `correct` (booleans) or `scores` (graded labels)")
    name, values = ("correct", correct) if correct is not None else ("scores", scores)
    if not isinstance(values, list) or len(values) != n:
        raise ValueError(f"`{name}` must be a list with one entry per response ({n})")
    if name == "correct":
        if not all(isinstance(v, bool) for v in values):
            raise ValueError("`correct` must hold true/false, one per response")
        return tuple(float(v) for v in values), False
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ValueError("`scores` must hold numbers, one per response")
    if not all(math.isfinite(v) for v in values):
        raise ValueError("`scores` must be finite numbers")
    return tuple(float(v) for v in values), True


def _best_of_n(line: int, record: dict[str, object]) -> BestOfNSet:
    unknown = sorted(set(record) - _BON_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; a best-of-N set has {sorted(_BON_FIELDS)}")
    responses = record.get("responses")
    if not isinstance(responses, list) or len(responses) < 2:
        raise ValueError("`responses` must be a list of two or more strings")
    if not all(isinstance(r, str) for r in responses):
        raise ValueError("`responses` must hold strings only")
    labels, graded = _labels(record, len(responses))
    return BestOfNSet(
        line=line,
        id=_optional_text(record, "id") or f"line{line}",
        prompt=_text(record, "prompt"),
        responses=tuple(responses),
        labels=labels,
        graded=graded,
        subset=_optional_text(record, "subset") or "all",
        reference=_optional_text(record, "reference"),
    )


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, object] | Exception]]:
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line, ValueError(f"not valid UTF-8 (byte {raw[exc.start]:#04x} at column "
                                       f"{exc.start + 1}); save the file as UTF-8")  # fmt: skip
                continue
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, ValueError(f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(record, dict):
                yield line, ValueError(f"expected a JSON object, got a {type(record).__name__}")
                continue
            yield line, record


def _parquet_records(path: Path) -> Iterator[tuple[int, dict[str, object] | Exception]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the install
        message = "reading Parquet needs pyarrow: pip install 'referee[eval]'"
        raise EvalDataError(str(path), message) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise EvalDataError(str(path), f"not a readable Parquet file: {exc}") from None
    for row, record in enumerate(table.to_pylist(), 1):
        yield row, {k: v for k, v in record.items() if v is not None}


def load_eval_data(path: Path, *, skip_bad: bool = False) -> EvalData:
    """Read and check every line; the first good line decides the file's format."""
    parquet = path.suffix.lower() in (".parquet", ".pq")
    unit = "row" if parquet else "line"
    try:
        records = list(_parquet_records(path) if parquet else _jsonl_records(path))
    except OSError as exc:
        raise EvalDataError(str(path), f"cannot read: {exc.strerror or exc}") from None
    data: EvalData | None = None
    first_line = 0
    bad: list[BadLine] = []
    seen: dict[str, int] = {}
    for line, record in records:
        try:
            if isinstance(record, Exception):
                raise record
            fmt = _format_of(record)
            if data is None:
                data, first_line = EvalData(path, fmt), line
            elif fmt != data.format:
                names = {"pairs": "a preference pair", "best_of_n": "a best-of-N set"}
                raise ValueError(f"{names[fmt]}, but {unit} {first_line} was {names[data.format]}"
                                 "; put each format in its own file")  # fmt: skip
            example = _pair(line, record) if fmt == "pairs" else _best_of_n(line, record)
            if len(example.id) > 200:
                raise ValueError(f"`id` has {len(example.id)} characters; at most 200")
            if example.id in seen:
                raise ValueError(f"id {example.id!r} already used on {unit} {seen[example.id]}")
            seen[example.id] = line
        except ValueError as exc:
            if not skip_bad:
                raise EvalDataError(f"{path}:{unit} {line}", str(exc)) from None
            bad.append(BadLine(line, str(exc)))
            continue
        if isinstance(example, PreferencePair):
            data.pairs.append(example)
        else:
            data.sets.append(example)
    if data is None or not data.examples:
        skipped = f" ({len(bad)} bad {unit}s skipped)" if bad else ""
        raise EvalDataError(str(path), f"no examples to evaluate{skipped}")
    data.bad_lines = bad
    return data
