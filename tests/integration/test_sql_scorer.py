"""The sql scorer on real SQLite databases (Spider layout): execution match, partial
credit, and queries that try to write, attach, load extensions or run forever."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from referee.scorers.base import ScoreInput, ScoreResult
from referee.scorers.execution.sql import SqlScorer


def make_db(root: Path, db_id: str) -> Path:
    path = root / db_id / f"{db_id}.sqlite"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
        INSERT INTO singer VALUES (1, 'Ana', 'France', 30), (2, 'Bo', 'France', 41),
                                  (3, 'Cy', 'Chile', 25), (4, 'Di', 'Japan', 41);
        """
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture
async def scorer(tmp_path: Path) -> AsyncIterator[SqlScorer]:
    make_db(tmp_path, "concert")
    s = SqlScorer("sql", SqlScorer.Options(databases=tmp_path, cpu_s=0.5, wall_s=30, max_rows=3))
    await s.setup()
    yield s


def item(response: str, gold: str | None, db_id: object = "concert") -> ScoreInput:
    return ScoreInput(id="q", prompt="", response=response, reference=gold, group=None,
                      messages=None, metadata={"db_id": db_id})  # fmt: skip


async def score(s: SqlScorer, *items: ScoreInput) -> list[ScoreResult]:
    return await s.score_batch(list(items))


async def test_execution_match_unordered_unless_gold_orders(scorer: SqlScorer) -> None:
    gold = "SELECT name FROM singer WHERE country = 'France'"
    ordered = "SELECT name FROM singer WHERE age > 25 ORDER BY age DESC, name"
    results = await score(
        scorer,
        item(
            "```sql\nSELECT name FROM singer WHERE country='France' ORDER BY name DESC;\n```", gold
        ),
        item("SELECT name FROM singer WHERE age > 40", gold),  # Bo and Di: half right
        item("SELECT name FROM singer WHERE age > 25 ORDER BY age DESC, name", ordered),
        item("SELECT name FROM singer WHERE age > 25 ORDER BY age, name", ordered),  # wrong order
    )
    assert [r.value for r in results] == [1.0, 0.0, 1.0, 0.0]
    assert results[1].aspects["row_f1"] == pytest.approx(0.5)
    assert results[3].aspects["row_f1"] == 1.0 and results[3].reason.startswith("mismatch")


async def test_row_f1_reward_and_column_f1(tmp_path: Path) -> None:
    make_db(tmp_path, "concert")
    s = SqlScorer("sql", SqlScorer.Options(databases=tmp_path, reward="row_f1"))
    [r] = await score(
        s,
        item(
            "SELECT name FROM singer WHERE age > 40",
            "SELECT name FROM singer WHERE country = 'France'",
        ),
    )
    assert r.value == pytest.approx(0.5)
    [swapped] = await score(s, item("SELECT age, name FROM singer", "SELECT name, age FROM singer"))
    assert swapped.aspects == {"match": 0.0, "row_f1": 0.0, "column_f1": 1.0}


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("DELETE FROM singer", "error"),
        ("INSERT INTO singer VALUES (9, 'X', 'Y', 1)", "error"),
        ("ATTACH DATABASE '/etc/passwd' AS x", "error"),
        ("PRAGMA query_only = OFF", "error"),
        ("SELECT load_extension('/usr/lib/x86_64-linux-gnu/libm.so.6')", "error"),
        ("SELECT * FROM nowhere", "error"),
        ("SELECT 1; DELETE FROM singer", "error"),
        (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c",
            "time_limit",
        ),
        ("SELECT * FROM singer", "row_limit"),
        ("", "no_sql"),
    ],
)
async def test_hostile_or_broken_predictions_get_zero_with_the_reason(
    scorer: SqlScorer, tmp_path: Path, query: str, reason: str
) -> None:
    [r] = await score(scorer, item(query, "SELECT count(*) FROM singer"))
    assert r.error is None and r.value == 0.0
    assert r.reason is not None and r.reason.startswith(reason), r.reason
    conn = sqlite3.connect(tmp_path / "concert" / "concert.sqlite")
    assert conn.execute("SELECT count(*) FROM singer").fetchone() == (4,)  # nothing written


async def test_item_problems_are_per_item_errors(scorer: SqlScorer) -> None:
    results = await score(
        scorer,
        item("SELECT 1", None),
        item("SELECT 1", "SELECT broken FROM"),
        item("SELECT 1", "SELECT 1", db_id="missing"),
        item("SELECT 1", "SELECT 1", db_id="../concert"),
        item("SELECT 1", "SELECT 1", db_id=None),
    )
    assert [r.error_type for r in results] == [
        "missing_field", "invalid_reference", "invalid_input", "invalid_input", "invalid_input",
    ]  # fmt: skip
    assert all(r.value is None for r in results)


def test_databases_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        SqlScorer.Options(databases=tmp_path / "nope")


@pytest.mark.slow
async def test_a_query_starved_of_cpu_by_an_overloaded_host_is_no_verdict(tmp_path: Path) -> None:
    # A real overload: the query's thread and four CPU hogs share one CPU, so the
    # wall-clock backstop comes long before the query has used its CPU time.
    make_db(tmp_path, "concert")
    s = SqlScorer("sql", SqlScorer.Options(databases=tmp_path, cpu_s=5, wall_s=1))
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # threads started from now on inherit it
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]  # noqa: ASYNC220
    try:
        [r] = await score(s, item(endless, "SELECT 1"))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        os.sched_setaffinity(0, before)
    assert r.value is None and r.error_type == "overloaded", r
