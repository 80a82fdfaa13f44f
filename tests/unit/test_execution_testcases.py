"""Code extraction, test formats, output comparison and the SQL result comparison: the
pure parts of the execution scorers (no sandbox, no database)."""

from __future__ import annotations

import json
import re

import pytest

from referee.scorers.execution.languages import BUILTIN_LANGUAGES
from referee.scorers.execution.sql import _has_order_by, compare_results, extract_sql
from referee.scorers.execution.testcases import (
    TestFormatError,
    call_harness,
    call_matches,
    call_stdin,
    extract_code,
    outputs_match,
    parse_call_output,
    parse_tests,
)

PY = BUILTIN_LANGUAGES["python"].fence_tags


def test_last_block_of_the_language_wins_over_other_languages_and_untagged_blocks() -> None:
    text = (
        "```python\nfirst()\n```\ntext\n```\nuntagged()\n```\n"
        "```bash\nrm -rf /\n```\n```py\nlast()\n```\n"
    )
    assert extract_code(text, mode="last_block", tags=PY) == "last()\n"
    assert extract_code(text, mode="first_block", tags=PY) == "first()\n"
    # no tagged block: untagged blocks are taken; other languages never
    assert extract_code("```\nx = 1\n```", mode="last_block", tags=PY) == "x = 1\n"
    assert extract_code("```bash\nls\n```", mode="last_block", tags=PY) is None


def test_no_code_think_sections_whole_and_regex_extraction() -> None:
    assert extract_code("I cannot solve it.", mode="last_block", tags=PY) is None
    assert extract_code("", mode="whole", tags=PY) is None
    hidden = "<think>```python\nwrong()\n```</think>```python\nright()\n```"
    assert extract_code(hidden, mode="last_block", tags=PY) == "right()\n"
    assert extract_code("print(1)", mode="whole", tags=PY) == "print(1)"
    pattern = re.compile(r"<code>(.*?)</code>", re.S)
    text = "<code>a()</code> <code>b()</code>"
    assert extract_code(text, mode="regex", tags=PY, pattern=pattern) == "b()"


def test_stdin_stdout_tests_as_verl_ground_truth_json() -> None:
    raw = json.dumps({"inputs": ["1 2\n", ["3 4", "5"]], "outputs": ["3\n", 7]})
    suite = parse_tests(raw, max_cases=10)
    assert suite.kind == "stdio"
    assert [(c.stdin, c.expected) for c in suite.cases] == [("1 2\n", "3\n"), ("3 4\n5", "7")]


def test_call_based_tests_take_argument_lists_or_json_lines() -> None:
    suite = parse_tests(
        {"fn_name": "add", "inputs": [[1, 2], "3\n4"], "outputs": [[3], 7]}, max_cases=10
    )
    assert suite.kind == "call"
    assert [json.loads(c.stdin) for c in suite.cases] == [[1, 2], [3, 4]]
    assert [c.call.expected for c in suite.cases if c.call] == [[3], 7]


def test_assertion_tests_humaneval_and_mbpp() -> None:
    suite = parse_tests(
        {"test": "def check(c):\n    assert c(1) == 2", "entry_point": "f"}, max_cases=5
    )
    assert suite.kind == "assert" and len(suite.cases) == 1
    assert suite.cases[0].suffix.rstrip().endswith("check(f)")
    mbpp = parse_tests({"test_list": ["assert f(1) == 2", "assert f(2) == 4"]}, max_cases=5)
    assert len(mbpp.cases) == 2 and "assert f(2) == 4" in mbpp.cases[1].suffix


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"inputs": ["1"], "outputs": []}, "1 inputs but 0 outputs"),
        ({"inputs": [], "outputs": []}, "no case"),
        ({"inputs": "1", "outputs": "2"}, "must both be lists"),
        ({"inputs": [{"a": 1}], "outputs": ["x"]}, "must be a string"),
        ({"fn_name": "os.system", "inputs": [[1]], "outputs": [1]}, "not a Python identifier"),
        ({"fn_name": "f", "inputs": [5], "outputs": [1]}, "list of call arguments"),
        ({"test": "x", "entry_point": "a; import os"}, "not a Python identifier"),
        ({"test_list": "assert x"}, "list of strings"),
        ({"unknown": 1}, "unknown test format"),
        ({"inputs": ["1"] * 3, "outputs": ["1"] * 3}, "at most max_cases=2"),
    ],
)
def test_malformed_tests_say_what_is_wrong(raw: object, message: str) -> None:
    with pytest.raises(TestFormatError, match=re.escape(message)):
        parse_tests(raw, max_cases=2)


def test_output_comparison_modes() -> None:
    assert outputs_match("3\n", "3\n", "exact", 0)
    assert not outputs_match("3", "3\n", "exact", 0)
    # lines: whitespace inside a line and trailing blank lines do not matter
    assert outputs_match("1  2 \r\n3\n\n", "1 2\n3", "lines", 0)
    assert not outputs_match("1 2 3\n", "1 2\n3\n", "lines", 0)
    assert not outputs_match("0.3333\n", "0.33333333\n", "lines", 0)
    assert outputs_match("0.3333334\n", "0.33333333\n", "float", 1e-6)
    assert not outputs_match("0.3334\n", "0.33333333\n", "float", 1e-6)
    assert outputs_match("nan\n", "nan\n", "float", 1e-6)  # equal text matches
    assert not outputs_match("yes\n", "no\n", "float", 1e-6)


def test_call_results_match_the_value_or_the_one_value_a_list_holds() -> None:
    assert call_matches([1, 2], [1, 2], None)
    assert call_matches(3, [3], None)
    assert not call_matches(True, 1, None)  # a bool is not a number here
    assert call_matches(0.1 + 0.2, 0.3, 1e-9)
    assert not call_matches(0.1 + 0.2, 0.3, None)
    assert call_matches({"a": [1.0]}, {"a": [1]}, None)


def test_call_harness_result_needs_the_per_run_marker() -> None:
    stdin, marker = call_stdin("[1, 2]")
    assert json.loads(stdin) == {"marker": marker, "args": [1, 2]}
    program = call_harness("def f(a, b):\n    return a + b\n", "f")
    assert "exec(compile(" in program and marker not in program
    assert parse_call_output(f"noise\n{marker}[3]\n", marker) == (True, [3])
    # a solution printing a marker of its own guess is not a result
    assert parse_call_output("@@referee-result-0000000000000000@@[3]\n", marker) == (False, None)


def test_sql_results_compare_as_multisets_unless_gold_orders_them() -> None:
    gold = [(1, "a"), (2, "b"), (2, "b")]
    assert compare_results([(2, "b"), (1, "a"), (2, "b")], gold, ordered=False)["match"] == 1.0
    assert compare_results([(2, "b"), (1, "a"), (2, "b")], gold, ordered=True)["match"] == 0.0
    # a duplicate is not ignored: multisets, not sets
    partial = compare_results([(1, "a"), (2, "b")], gold, ordered=False)
    assert partial["match"] == 0.0 and partial["row_f1"] == pytest.approx(0.8)
    assert compare_results([(1.0,)], [(1,)], ordered=False)["match"] == 1.0
    assert compare_results([], [], ordered=False) == {"match": 1.0, "row_f1": 1.0, "column_f1": 1.0}
    # the same columns in another order: no row matches, every column does
    swapped = compare_results([("a", 1), ("b", 2), ("b", 2)], gold, ordered=False)
    assert swapped["row_f1"] == 0.0 and swapped["column_f1"] == 1.0


def test_order_by_is_found_outside_string_literals_only() -> None:
    assert _has_order_by("SELECT a FROM t ORDER  BY a")
    assert not _has_order_by("SELECT 'order by' FROM t")
    assert extract_sql("Here:\n```sql\nSELECT 1;\n```") == "SELECT 1"
    assert extract_sql("SELECT 2") == "SELECT 2"
    assert extract_sql("  ") is None
