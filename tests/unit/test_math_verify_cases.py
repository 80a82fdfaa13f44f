"""math-verify's own regression cases through the ``math`` scorer, and text-only references.

The cases (tests/data/math_verify_cases.yaml) are math-verify's OpenThoughts and NuminaMath
tests, copied with their source and licence. Each goes through the real scorer (worker
processes, math-verify inside) and through math-verify itself, so a change to either the
scorer or the library shows up here as a disagreement with the library's own expectations.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from referee.scorers.base import ScoreResult
from referee.scorers.rules.math import MathScorer
from tests.support import score_input

in_module_loop = pytest.mark.asyncio(loop_scope="module")

DATA = Path(__file__).parent.parent / "data" / "math_verify_cases.yaml"
DOC: dict[str, Any] = yaml.safe_load(DATA.read_text())
CASES: list[dict[str, Any]] = DOC["cases"]
IDS = [f"{c['file'].removeprefix('test_').removesuffix('.py')}-{c['index']}" for c in CASES]
TEXTUAL = "compared as text: the reference parses only to text"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scorer() -> AsyncIterator[MathScorer]:
    s = MathScorer("math", MathScorer.Options(workers=2))
    await s.setup()
    yield s
    await s.close()


def verdict(result: ScoreResult) -> bool:
    assert result.error is None, result.error
    assert result.value in (0.0, 1.0) and result.cacheable
    return result.value == 1.0


def test_the_data_file_names_its_source_and_licence() -> None:
    source = DOC["source"]
    assert source["repository"] == "https://github.com/huggingface/Math-Verify"
    assert source["licence"] == "Apache-2.0"
    assert set(source["files"]) == {f"tests/{c['file']}" for c in CASES}
    assert len(CASES) == 60
    for case in CASES:  # a case Referee answers differently says why
        assert ("referee" in case) == ("why" in case), case


@in_module_loop
@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_the_math_scorer_agrees_with_each_case(
    scorer: MathScorer, case: dict[str, Any]
) -> None:
    [result] = await scorer.score_batch([score_input(case["pred"], case["gold"])])
    assert verdict(result) is case.get("referee", case["expected"]), result.reason


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_math_verify_itself_still_gives_the_recorded_verdict(case: dict[str, Any]) -> None:
    """Upstream's compare_strings, as its tests call it, against the installed library."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    got = verify(parse(case["gold"], config), parse(case["pred"], config), float_rounding=6)
    installed = importlib.metadata.version("math-verify")
    expected = case.get("math_verify_0_9", case["expected"])
    assert got is expected, f"math-verify {installed} (the file records 0.9.0)"


@in_module_loop
async def test_the_text_only_case_is_compared_as_text_and_says_so(scorer: MathScorer) -> None:
    [case] = [c for c in CASES if c["file"] == "test_open_thoughts.py" and c["index"] == 7]
    [result] = await scorer.score_batch([score_input(case["pred"], case["gold"])])
    assert result.value == 1.0
    assert result.reason == (
        f"{TEXTUAL} 'x = \\\\frac{{1}}{{2}}, x = \\\\frac{{-1 \\\\pm \\\\sqrt{{13}}}}{{4}}'"
    )


PM = "\\frac{-1 \\pm \\sqrt{13}}{4}"

# (reference, response, correct): text-only references, equal text after math-verify's
# LaTeX normalisation (\dfrac -> \frac, \boxed and $…$ removed, outer spaces stripped).
TEXT_TABLE: list[tuple[str, str, bool]] = [
    (PM, f"\\boxed{{{PM}}}", True),
    (PM, f"$${PM}$$", True),
    (PM, "\\boxed{\\dfrac{-1 \\pm \\sqrt{13}}{4} }", True),
    (f"${PM}$", f"\\boxed{{{PM}}}", True),
    ("$$\\text{A} \\to \\text{B}$$", "\\boxed{\\text{A} \\to \\text{B}}", True),
    (PM, "\\boxed{\\frac{-1 \\mp \\sqrt{13}}{4}}", False),
    (PM, "\\boxed{\\frac{-1+\\sqrt{13}}{4}, \\frac{-1-\\sqrt{13}}{4}}", False),
    # Textual means textual: spacing inside and brackets around count, as in math-verify.
    (PM, "\\boxed{\\frac{-1\\pm\\sqrt{13}}{4}}", False),
    (PM, f"\\boxed{{\\left({PM}\\right)}}", False),
    # A hedge (two boxes) is not the one answer.
    (PM, f"\\boxed{{{PM}}} or \\boxed{{1}}", False),
]


@in_module_loop
@pytest.mark.parametrize(("reference", "response", "correct"), TEXT_TABLE)
async def test_a_text_only_reference_is_compared_as_text(
    scorer: MathScorer, reference: str, response: str, correct: bool
) -> None:
    [result] = await scorer.score_batch([score_input(response, reference)])
    assert verdict(result) is correct
    assert TEXTUAL in (result.reason or "")
    if not correct:
        assert (result.reason or "").startswith("answer '")
        assert "is not equivalent to the reference (compared as text" in (result.reason or "")


@in_module_loop
async def test_a_bare_text_reference_is_read_whole_not_by_a_fragment(scorer: MathScorer) -> None:
    # Parsed bare, math-verify extracts only the first root (1/2) from this reference; read
    # as if in $…$ it is the whole answer, as text: the first root alone is not the answer.
    reference = "x = \\frac{1}{2}, x = \\frac{-1 \\pm \\sqrt{13}}{4}"
    results = await scorer.score_batch(
        [
            score_input("\\boxed{\\frac{1}{2}}", reference),
            score_input(f"\\boxed{{{reference}}}", reference),
        ]
    )
    assert [verdict(r) for r in results] == [False, True]
    assert all(TEXTUAL in (r.reason or "") for r in results)


@in_module_loop
async def test_no_answer_against_a_text_reference_is_no_answer(scorer: MathScorer) -> None:
    [result] = await scorer.score_batch([score_input("I don't know.", PM)])
    assert (result.value, result.reason) == (0.0, "no answer found in response")


@in_module_loop
async def test_an_expression_reference_does_not_say_textual(scorer: MathScorer) -> None:
    [result] = await scorer.score_batch([score_input("\\boxed{0.5}", "\\frac{1}{2}")])
    assert (result.value, result.reason) == (1.0, None)


@in_module_loop
@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("", "math-verify extracts nothing from it"),
        ("a\n\nb", "math-verify extracts nothing from it"),
        ("\\frac{", "it has a '{' that is never closed"),
        ("$\\frac{1}{$", "it has a '{' that is never closed"),
        ("}{", "it has a '}' that closes nothing"),
        ("x+", "it ends with '+', an operator without its operand"),
        ("$$x = \\frac{1}{2}, x =$$", "it ends with '=', an operator without its operand"),
        ("???", "it has no letter or digit, only symbols"),
        ("\\pm", "it has no letter or digit, only symbols"),
        ("\\quad", "it has no letter or digit, only symbols"),
    ],
)
async def test_broken_text_stays_an_invalid_reference(
    scorer: MathScorer, reference: str, problem: str
) -> None:
    # Compared as text, a broken reference would score a right answer wrong (the truncated
    # "\frac{1}{" against "\frac{1}{2}"): the item is refused with what is wrong instead.
    [result] = await scorer.score_batch([score_input(f"\\boxed{{{reference}}}", reference)])
    assert result.value is None and result.error_type == "invalid_reference"
    assert result.error == f"cannot parse the reference {reference!r} as a math answer: {problem}"
