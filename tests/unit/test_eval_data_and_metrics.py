"""`referee eval`'s input checks (each bad line named with its number and what is wrong)
and its measures, against values worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from referee.eval.data import EvalDataError, load_eval_data
from referee.eval.metrics import best_of_n_metrics, pair_metrics, spearman

PAIR = {"prompt": "p", "chosen": "good", "rejected": "bad"}
SET = {"prompt": "p", "responses": ["a", "b"], "correct": [True, False]}


def write(tmp_path: Path, lines: list[object], name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join(
        line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode() for line in lines
    ))  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"prompt": "p", "chosen": "c"}, "`rejected` must be a string; it is missing"),
        ({"prompt": "p", "chosen": "c", "rejected": 3}, "`rejected` must be a string; it is a int"),
        ({"prompt": "p", "answer": "x"}, "neither a preference pair"),
        (SET, "a best-of-N set, but line 1 was a preference pair"),
        ({**PAIR, "responses": ["a"]}, "has both"),
        ({**PAIR, "score": 1}, "unknown field(s) ['score']"),
        (b"\xff\xfe not utf-8\n", "not valid UTF-8 (byte 0xff at column 1)"),
        (b'{"prompt": "p", \n', "not valid JSON"),
        ([1, 2], "expected a JSON object, got a list"),
        ({**PAIR, "id": "line1"}, "id 'line1' already used on line 1"),
    ],
)
def test_a_bad_pair_file_line_stops_the_load_with_its_number(
    tmp_path: Path, bad: object, message: str
) -> None:
    path = write(tmp_path, [PAIR, bad, PAIR])
    with pytest.raises(EvalDataError) as caught:
        load_eval_data(path)
    assert caught.value.where == f"{path}:line 2"
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"prompt": "p", "responses": ["a", "b"]}, "give exactly one of `correct`"),
        ({**SET, "scores": [1, 0]}, "give exactly one of `correct`"),
        ({**SET, "correct": [True]}, "one entry per response (2)"),
        ({**SET, "correct": [1, 0]}, "`correct` must hold true/false"),
        ({"prompt": "p", "responses": ["a"], "correct": [True]}, "two or more strings"),
        (
            {"prompt": "p", "responses": ["a", "b"], "scores": [1, "x"]},
            "`scores` must hold numbers",
        ),
    ],
)
def test_a_bad_best_of_n_line_stops_the_load_with_its_number(
    tmp_path: Path, bad: object, message: str
) -> None:
    with pytest.raises(EvalDataError, match=r"in\.jsonl:line 2: ") as caught:
        load_eval_data(write(tmp_path, [SET, bad]))
    assert message in caught.value.message


def test_skip_bad_counts_and_lists_bad_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, [PAIR, b"\xc3\x28\n", {"prompt": "p"}, SET, b"\n", PAIR])
    data = load_eval_data(path, skip_bad=True)
    assert data.format == "pairs"
    assert [p.line for p in data.pairs] == [1, 6]
    assert [(b.line, b.message.split(" (")[0].split(";")[0]) for b in data.bad_lines] == [
        (2, "not valid UTF-8"),
        (3, "neither a preference pair"),
        (4, "a best-of-N set, but line 1 was a preference pair"),
    ]


def test_a_file_with_no_usable_line_is_an_error_even_with_skip_bad(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="no examples to evaluate \\(1 bad lines skipped\\)"):
        load_eval_data(write(tmp_path, [{"x": 1}]), skip_bad=True)


def test_parquet_rows_load_like_jsonl_lines_and_bad_rows_are_numbered(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{**PAIR, "subset": "s", "reference": None}, {**PAIR, "chosen": None}]
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(EvalDataError, match=r"pairs\.parquet:row 2: `chosen` must be a string"):
        load_eval_data(path)
    data = load_eval_data(path, skip_bad=True)
    assert [(p.subset, p.chosen, p.reference) for p in data.pairs] == [("s", "good", None)]


def test_pair_accuracy_counts_ties_as_half_and_splits_by_length_and_subset() -> None:
    m = pair_metrics(
        chosen=[1.0, 0.5, 0.0, 2.0, None],
        rejected=[0.0, 0.5, 1.0, 1.0, 0.0],
        subsets=["a", "a", "b", "b", "b"],
        chosen_lengths=[5, 10, 10, 3, 1],
        rejected_lengths=[10, 5, 10, 9, 1],
    )
    # credits 1, 0.5, 0, 1; the fifth pair has no value (an item error): left out, counted
    assert m["accuracy"] == pytest.approx(2.5 / 4)
    assert (m["pairs"], m["missing"], m["ties"]) == (4, 1, 1)
    assert m["subsets"] == {"a": {"pairs": 2, "accuracy": 0.75}, "b": {"pairs": 2, "accuracy": 0.5}}
    length = m["length"]
    assert length["chosen_shorter"] == {"pairs": 2, "accuracy": 1.0}  # pairs 1 and 4
    assert length["chosen_longer"] == {"pairs": 1, "accuracy": 0.5}  # pair 2; pair 3 is equal
    assert m["margin"]["mean"] == pytest.approx((1 + 0 - 1 + 1) / 4)


def test_best_of_n_top1_shares_credit_on_tied_tops_and_spearman_matches_by_hand() -> None:
    m = best_of_n_metrics(
        rewards=[[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.2, None, 0.1, 0.0]],
        labels=[[3, 2, 1, 0], [3, 2, 1, 0], [1, 0, 0, 0]],
        subsets=["x", "x", "y"],
        lengths=[[1, 2, 3, 4], [1, 2, 3, 4], [1, 1, 1, 1]],
        graded=True,
    )
    assert m["top1_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert (m["sets"], m["missing"], m["random_top1"]) == (2, 1, 0.25)
    # ranks (4,2,2,2) vs (4,3,2,1): 3/sqrt(15); ranks (3.5,3.5,1.5,1.5) vs (4,3,2,1): 4/sqrt(20)
    assert m["spearman"]["mean"] == pytest.approx((3 / math.sqrt(15) + 4 / math.sqrt(20)) / 2)


def test_spearman_is_undefined_for_a_constant_series_never_zero() -> None:
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert spearman([1.0, 2.0, 3.0], [10.0, 20.0, 25.0]) == pytest.approx(1.0)
