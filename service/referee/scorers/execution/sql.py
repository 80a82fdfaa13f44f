"""``sql``: execution match for text-to-SQL.

The predicted query (the last fenced ```sql block of the response, else the whole
response) and the gold query (``reference``) run on the SQLite database named by
``metadata.db_id`` (``databases`` / ``path_template``, Spider/BIRD layout by default).
Reward 1 when the two result multisets are equal (order-sensitive only when the gold
query has ORDER BY), else 0, or the row F1 with ``reward: row_f1``; aspects ``match``,
``row_f1`` and ``column_f1`` (columns compared as multisets of values, ignoring their
order and names).

Each query gets a read-only connection (``mode=ro``, ``PRAGMA query_only``), an
authorizer that refuses ATTACH, DETACH, PRAGMA and ``load_extension`` (extensions stay
disabled), a CPU-time limit through SQLite's progress handler (the thread's own CPU time,
so a busy host does not trip it) and a row cap. A predicted query that fails, runs out of
time or returns too many rows gets reward 0 with the reason; a gold query that does is a
per-item error (``invalid_reference``), as is a missing or unknown database. A query that
was still short of its CPU time when the wall-clock backstop fired is ``overloaded``.
"""

from __future__ import annotations

import asyncio
import math
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, FiniteFloat, field_validator

from referee.metrics import Metrics
from referee.scorers.base import (
    ScoreInput,
    Scorer,
    ScoreResult,
    ScorerOptions,
    deadline_passed,
    past_deadline_result,
)

__all__ = ["QueryError", "SqlScorer", "compare_results", "run_query"]

_SQL_BLOCK = re.compile(r"```[ \t]*sql[^\n]*\n(.*?)```", re.S | re.I)
_ANY_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_ORDER_BY = re.compile(r"\border\s+by\b", re.I)
_STRINGS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_DB_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_DENIED = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_PRAGMA}

Row = tuple[Any, ...]


class QueryError(Exception):
    """A query that did not give a result: ``kind`` is error, time_limit or row_limit."""

    def __init__(self, kind: Literal["error", "time_limit", "row_limit", "overloaded"],
                 message: str) -> None:  # fmt: skip
        super().__init__(message)
        self.kind = kind


def _authorizer(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
    if action in _DENIED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() == "load_extension":
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def run_query(path: Path, query: str, *, cpu_s: float, wall_s: float, max_rows: int) -> list[Row]:
    """The rows of ``query`` on the database at ``path``, read-only and limited."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           check_same_thread=False)  # fmt: skip
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_authorizer)
        cpu0, wall0 = time.thread_time(), time.monotonic()
        stopped: list[str] = []

        def progress() -> int:
            if time.thread_time() - cpu0 > cpu_s:
                stopped.append("time_limit")
                return 1
            if time.monotonic() - wall0 > wall_s:
                stopped.append("overloaded")
                return 1
            return 0

        conn.set_progress_handler(progress, 1000)
        try:
            cursor = conn.execute(query)
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.Error as exc:
            if stopped and stopped[0] == "time_limit":
                raise QueryError("time_limit", f"more than {cpu_s:g}s of CPU") from None
            if stopped:
                raise QueryError(
                    "overloaded",
                    f"wall-clock backstop {wall_s:g}s reached before the CPU limit "
                    f"({time.thread_time() - cpu0:.2f}s used): the host is overloaded",
                ) from None
            raise QueryError("error", f"{type(exc).__name__}: {exc}") from None
        except (ValueError, OverflowError) as exc:  # e.g. a NUL in the text
            raise QueryError("error", f"{type(exc).__name__}: {exc}") from None
        if len(rows) > max_rows:
            raise QueryError("row_limit", f"more than max_rows={max_rows} rows")
        return [tuple(row) for row in rows]
    finally:
        conn.close()


def _key(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _f1(pred: Counter[Any], gold: Counter[Any]) -> float:
    if not pred and not gold:
        return 1.0
    overlap = sum((pred & gold).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(pred.values()), overlap / sum(gold.values())
    return 2 * precision * recall / (precision + recall)


def compare_results(pred: list[Row], gold: list[Row], ordered: bool) -> dict[str, float]:
    """match (1/0), row_f1 and column_f1 of a predicted result against the gold one."""
    p = [tuple(_key(v) for v in row) for row in pred]
    g = [tuple(_key(v) for v in row) for row in gold]
    match = p == g if ordered else Counter(p) == Counter(g)
    p_cols = Counter(tuple(sorted(repr(row[i]) for row in p)) for i in range(len(p[0]) if p else 0))
    g_cols = Counter(tuple(sorted(repr(row[i]) for row in g)) for i in range(len(g[0]) if g else 0))
    return {
        "match": float(match),
        "row_f1": _f1(Counter(p), Counter(g)),
        "column_f1": _f1(p_cols, g_cols),
    }


def _has_order_by(query: str) -> bool:
    return bool(_ORDER_BY.search(_STRINGS.sub("''", query)))


def extract_sql(text: str) -> str | None:
    blocks = _SQL_BLOCK.findall(text) or _ANY_BLOCK.findall(text)
    query = (blocks[-1] if blocks else text).strip().rstrip(";").strip()
    return query or None


class SqlScorer(Scorer):
    kind = "sql"
    reads = ("response", "reference", "metadata")

    class Options(ScorerOptions):
        databases: Path = Field(description="directory holding the SQLite databases")
        path_template: str = Field(
            default="{db_id}/{db_id}.sqlite", description="a database's path under databases"
        )
        reward: Literal["match", "row_f1"] = Field(
            default="match",
            description="match: 1 when the result multisets match, else 0; row_f1: the "
            "row F1 of the two results (an aspect either way)",
        )
        cpu_s: FiniteFloat = Field(default=5.0, gt=0, le=600, description="CPU per query")
        wall_s: FiniteFloat | None = Field(default=None, gt=0, description="default 4 x cpu_s")
        max_rows: int = Field(
            default=10_000, ge=1, le=10_000_000,
            description="rows a query may return; a predicted query that returns more gets "
            "reward 0 with the reason, a gold one an invalid_reference error",
        )  # fmt: skip
        max_concurrency: int = Field(
            default=4, ge=1, le=256, description="queries at once (each on its own thread)"
        )

        @field_validator("databases")
        @classmethod
        def _is_dir(cls, value: Path) -> Path:
            if not value.is_dir():
                raise ValueError(f"{value} is not a directory")
            return value

        @field_validator("path_template")
        @classmethod
        def _has_db_id(cls, value: str) -> str:
            if "{db_id}" not in value:
                raise ValueError("must contain {db_id}")
            return value

    def __init__(self, name: str, options: ScorerOptions) -> None:
        if not isinstance(options, SqlScorer.Options):
            raise TypeError(f"{type(self).__name__} needs {type(self).__name__}.Options")
        super().__init__(name, options)
        self.opts = options
        self._slots: asyncio.Semaphore | None = None
        self._queries: Any = None

    def bind_metrics(self, metrics: Metrics) -> None:
        self._queries = metrics.sql_queries

    def _count(self, verdict: str) -> None:
        if self._queries is not None:
            self._queries.labels(self.name, verdict).inc()

    def fingerprint_extra(self) -> dict[str, object]:
        return {"sqlite": sqlite3.sqlite_version, "databases": str(self.opts.databases.resolve())}

    def _database(self, item: ScoreInput) -> Path:
        db_id = (item.metadata or {}).get("db_id")
        if not isinstance(db_id, str) or not _DB_ID.match(db_id):
            raise LookupError("metadata.db_id must name a database (letters, digits, _ . -)")
        root = self.opts.databases.resolve()
        path = (root / self.opts.path_template.format(db_id=db_id)).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise LookupError(f"no database {db_id!r} under the configured databases")
        return path

    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.opts.max_concurrency)
        return list(await asyncio.gather(*(self._one(item) for item in items)))

    async def _one(self, item: ScoreInput) -> ScoreResult:
        assert self._slots is not None
        async with self._slots:
            if deadline_passed():
                return past_deadline_result()
            return await asyncio.to_thread(self._score_one, item)

    def _run(self, path: Path, query: str) -> list[Row]:
        o = self.opts
        return run_query(path, query, cpu_s=o.cpu_s, wall_s=o.wall_s or 4 * o.cpu_s,
                         max_rows=o.max_rows)  # fmt: skip

    def _score_one(self, item: ScoreInput) -> ScoreResult:
        if not item.reference or not item.reference.strip():
            return ScoreResult.failed("the sql scorer needs the gold query in `reference`",
                                      "missing_field")  # fmt: skip
        try:
            path = self._database(item)
        except LookupError as exc:
            return ScoreResult.failed(str(exc.args[0]), "invalid_input")
        try:
            gold = self._run(path, item.reference.strip().rstrip(";"))
        except QueryError as exc:
            if exc.kind == "overloaded":
                return ScoreResult.failed(str(exc), "overloaded")
            return ScoreResult.failed(f"the gold query failed: {exc}", "invalid_reference")
        zero = {"match": 0.0, "row_f1": 0.0, "column_f1": 0.0}
        query = extract_sql(item.response)
        if query is None:
            self._count("no_sql")
            return ScoreResult(value=0.0, aspects=zero, reason="no_sql: the response is empty")
        try:
            pred = self._run(path, query)
        except QueryError as exc:
            if exc.kind == "overloaded":
                return ScoreResult.failed(str(exc), "overloaded")
            self._count(exc.kind)
            return ScoreResult(value=0.0, aspects=zero, reason=f"{exc.kind}: {exc}")
        aspects = compare_results(pred, gold, ordered=_has_order_by(item.reference))
        self._count("match" if aspects["match"] else "mismatch")
        value = aspects["match"] if self.opts.reward == "match" else aspects["row_f1"]
        reason = "match" if aspects["match"] else (
            f"mismatch: {len(pred)} rows, gold {len(gold)} (row F1 {aspects['row_f1']:.2f})"
        )  # fmt: skip
        return ScoreResult(value=value, aspects=aspects, reason=reason)
