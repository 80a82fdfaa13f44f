"""Typed outcomes: every per-item error type the server can give is in the one table that
says failed/invalid and retryable, and the wire schema keeps outcome and error consistent."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from referee.errors import ITEM_ERRORS, item_error, item_outcome
from referee_client.schema import RewardResponse, RewardResult

SERVICE = Path(__file__).parents[2] / "service" / "referee"
# Calls whose second argument (or `error_type=`) names a per-item error type.
_TYPED_CALLS = {"failed", "JudgeCallError", "ItemRejected", "fail"}
# The default types of those calls (ScoreResult.failed, JudgeCallError, ItemRejected).
_DEFAULTS = {"scorer_error", "judge_error", "invalid_input"}


def _constants(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _constants(node.body) | _constants(node.orelse)
    return set()


def _error_types_in_source() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in SERVICE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "kind" for t in node.targets
            ):
                if path.name == "_cpu_limit.py":  # limit_failure's kind
                    found.update(dict.fromkeys(_constants(node.value), path.name))
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in _TYPED_CALLS:
                continue
            args = [node.args[1]] if len(node.args) > 1 else []
            args += [k.value for k in node.keywords if k.arg == "error_type"]
            for arg in args:
                found.update(dict.fromkeys(_constants(arg), path.name))
    return found


def test_every_error_type_the_server_gives_is_mapped_to_an_outcome() -> None:
    found = _error_types_in_source()
    assert len(found) > 15, "the source scan found too little: check _TYPED_CALLS"
    unmapped = {t: where for t, where in found.items() if t not in ITEM_ERRORS}
    assert not unmapped, f"add these to referee.errors.ITEM_ERRORS: {unmapped}"
    assert _DEFAULTS <= set(ITEM_ERRORS)


@pytest.mark.parametrize(
    ("error_type", "outcome", "retryable"),
    [
        ("timeout", "failed", True),
        ("verifier_timeout", "failed", True),
        ("overloaded", "failed", True),
        ("judge_unavailable", "failed", True),
        ("judge_parse_error", "failed", True),
        ("scorer_error", "failed", False),
        ("internal", "failed", False),
        ("missing_field", "invalid", False),
        ("invalid_reference", "invalid", False),
        ("input_too_long", "invalid", False),
        ("a_users_own_type", "failed", False),  # unknown: no verdict, not known to pass later
    ],
)
def test_error_types_map_to_outcomes(error_type: str, outcome: str, retryable: bool) -> None:
    assert item_outcome(error_type) == (outcome, retryable)
    got, error = item_error(error_type, "why")
    assert got == outcome and error.retryable is retryable and error.type == error_type


def test_a_result_says_its_outcome_and_it_agrees_with_its_error() -> None:
    scored = RewardResult(id="a", reward=1.0)
    assert scored.outcome == "scored" and not scored.retryable
    failed = RewardResult.model_validate(
        {
            "id": "b",
            "outcome": "failed",
            "reward": None,
            "error": {"type": "verifier_timeout", "message": "m", "retryable": True},
        }
    )
    assert failed.retryable
    with pytest.raises(ValidationError, match="outcome 'scored'"):
        RewardResult.model_validate(
            {
                "id": "c",
                "outcome": "scored",
                "reward": None,
                "error": {"type": "timeout", "message": "m"},
            }
        )
    with pytest.raises(ValidationError, match="carries no reward"):
        RewardResult.model_validate(
            {
                "id": "d",
                "outcome": "failed",
                "reward": 0.0,
                "error": {"type": "timeout", "message": "m"},
            }
        )


def test_a_response_from_a_server_without_outcomes_reads_errors_as_failed() -> None:
    old = RewardResult.model_validate(
        {"id": "a", "reward": None, "error": {"type": "scorer_error", "message": "m"}}
    )
    assert old.outcome == "failed" and old.error is not None and not old.error.retryable


def _doc_blocks(marker_id: str, language: str) -> list[str]:
    doc = (Path(__file__).parents[2] / "docs" / "concepts" / "outcomes.md").read_text()
    found = re.findall(
        rf"<!-- doctest: test \(tests/unit/test_outcomes.py: {marker_id}\) -->\n"
        rf"```{language}\n(.*?)```",
        doc,
        re.S,
    )
    assert found, f"no {language} block marked {marker_id} in docs/concepts/outcomes.md"
    return found


def test_the_documented_response_is_what_the_schema_accepts() -> None:
    # outcomes-json: the JSON sample of docs/concepts/outcomes.md
    for block in _doc_blocks("outcomes-json", "json"):
        response = RewardResponse.model_validate_json(block)
        outcomes = [r.outcome for r in response.results]
        assert outcomes == ["scored", "failed", "invalid"]
        retryable = [r.retryable for r in response.results]
        assert retryable == [False, True, False]
        for r in response.results[1:]:
            assert r.error is not None
            assert item_outcome(r.error.type) == (r.outcome, r.error.retryable)
