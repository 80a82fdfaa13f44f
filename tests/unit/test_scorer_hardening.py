"""Rule scorers under hostile input: bounded regex work, deadlines, cache keys, and
configuration faults found when the options are validated."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from referee.cache import cache_key
from referee.scorers import ScoreInput, Scorer, ScoreResult
from referee.scorers.base import FIELDS, SyncScorer
from referee.scorers.rules.format import FormatScorer
from referee.scorers.rules.length import LengthScorer
from referee.scorers.rules.match import MatchScorer, unbox
from referee.scorers.rules.python import PythonScorer
from tests.support import score_input

REWARDS = "referee.examples.rewards"
# Exponential for a backtracking engine: (a|aa)+ splits a run of a's in Fibonacci(n) ways.
CATASTROPHIC = r"(a|aa)+$"
CATASTROPHIC_TEXT = "a" * 40 + "b"


item = score_input


async def score(scorer: Scorer, *items: ScoreInput) -> list[ScoreResult]:
    await scorer.setup()
    results = await scorer.score_batch(items)
    assert len(results) == len(items)
    return results


def match(**options: object) -> MatchScorer:
    return MatchScorer("m", MatchScorer.Options.model_validate(options))


def fmt(**options: object) -> FormatScorer:
    return FormatScorer("f", FormatScorer.Options.model_validate(options))


# -- match: bounded regex work --------------------------------------------------


async def test_match_default_extract_scores_300kb_of_unclosed_answer_tags_quickly() -> None:
    scorer = match(mode="normalized", extract="<answer>(.*?)</answer>")
    response = ("<answer>" + "x" * 7) * 20_000  # 300 KB, 20,000 tags, no closing tag
    started = time.perf_counter()
    [result] = await score(scorer, item(response, "42"))
    assert time.perf_counter() - started < 0.5
    assert result.value == 0.0
    assert result.reason == "nothing extracted; examined the last 20000 of 300000 characters"


async def test_match_examines_only_the_last_max_chars() -> None:
    scorer = match(mode="normalized", extract="<answer>(.*?)</answer>", max_chars=20)
    answer_last = "x" * 50 + "<answer>42</answer>"
    answer_first = "<answer>42</answer>" + "x" * 50
    hit, miss, short = await score(
        scorer, item(answer_last, "42"), item(answer_first, "42"), item("<answer>42</answer>", "42")
    )
    assert hit.value == 1.0 and hit.reason == "examined the last 20 of 69 characters"
    assert miss.value == 0.0 and miss.reason is not None
    assert miss.reason.startswith("nothing extracted")
    assert short.value == 1.0 and short.reason is None


async def test_match_catastrophic_reference_regex_is_a_failed_item_not_a_miss() -> None:
    scorer = match(mode="regex", reward_miss=-1.0)
    started = time.perf_counter()
    [timed_out] = await score(scorer, item(CATASTROPHIC_TEXT, CATASTROPHIC))
    assert time.perf_counter() - started < 5.0  # unbounded without the limit; 0.5 s idle
    assert timed_out.value is None and timed_out.error_type == "verifier_timeout"
    assert "spent its CPU budget" in (timed_out.error or "")
    assert not timed_out.cacheable
    # The classic (a+)+$ the `regex` engine itself answers at once.
    [miss] = await score(scorer, item(CATASTROPHIC_TEXT, r"(a+)+$"))
    assert miss.value == -1.0 and miss.cacheable


async def test_match_configured_extract_runs_under_the_timeout() -> None:
    scorer = match(mode="exact", value="a", extract=r"((?:a|aa)+)$", regex_timeout_s=0.05)
    [result] = await score(scorer, item(CATASTROPHIC_TEXT))
    assert result.value is None and result.error_type == "verifier_timeout"
    assert not result.cacheable


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("a" * 1001, "1001 characters long (at most 1000)"),
        ("(", "error"),
        ("(?:(?:a{1000}){1000}){1000}", "unroll to about 1000000000 items"),  # ~40 GB
        ("ab" * 300, "600 literal characters in a row"),  # "ab" * 1000: 1.6 s in the GIL
        ("(" * 400 + ")" * 400, "RecursionError"),
    ],
)
async def test_match_unusable_reference_pattern_is_an_invalid_reference(
    reference: str, message: str
) -> None:
    [result] = await score(match(mode="regex"), item("aaa", reference))
    assert result.value is None and result.error_type == "invalid_reference"
    assert result.error is not None and message in result.error


async def test_match_reference_pattern_length_cap_is_an_option() -> None:
    pattern = "(?:a|b)" * 214  # 1498 characters
    default, raised = match(mode="regex"), match(mode="regex", max_reference_pattern_chars=2000)
    [refused] = await score(default, item("a" * 214, pattern))
    [ok] = await score(raised, item("a" * 214, pattern))
    assert refused.error_type == "invalid_reference" and ok.value == 1.0


async def scoring_threads(scorer: SyncScorer, items: list[ScoreInput]) -> set[threading.Thread]:
    """The threads the scorer's per-item work ran on while ``score_batch`` scored ``items``."""
    seen: set[threading.Thread] = set()
    work = scorer.score_one

    def recorded(one: ScoreInput) -> ScoreResult:
        seen.add(threading.current_thread())
        return work(one)

    scorer.score_one = recorded  # type: ignore[method-assign]
    await score(scorer, *items)
    assert seen, "score_one never ran"
    return seen


async def test_match_with_reference_patterns_never_scores_on_the_event_loop() -> None:
    loop_thread = threading.current_thread()
    tiny = [item("a", "a")]
    assert loop_thread not in await scoring_threads(match(mode="regex"), tiny)
    # any timed regex, even a fixed one, runs in a worker thread
    assert loop_thread not in await scoring_threads(match(mode="regex", pattern="a"), tiny)
    assert await scoring_threads(match(mode="exact"), tiny) == {loop_thread}  # cheap: inline


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"regex_timeout_s": 0}, "greater than 0"),
        ({"regex_timeout_s": "inf"}, "finite"),
        ({"max_chars": 0}, "greater than 0"),
        ({"max_reference_pattern_chars": 0}, "greater than 0"),
    ],
)
def test_match_bounds_must_be_positive(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MatchScorer.Options.model_validate(options)


def test_unbox_is_linear_in_the_text() -> None:
    nested = "\\boxed{" * 20_000 + "x" + "}" * 20_000  # 160 KB
    serial = "\\boxed{1} " * 20_000
    started = time.perf_counter()
    assert unbox(nested) == "x"
    assert unbox(serial) == "1 " * 20_000
    assert time.perf_counter() - started < 0.5


def test_unbox_leaves_the_text_from_an_unclosed_box_on() -> None:
    assert unbox("\\boxed{a} \\boxed{b \\fbox{c}") == "a \\boxed{b c"
    assert unbox("{\\boxed{x}} \\fbox{\\boxed{1}}") == "{x} 1"


# -- format ----------------------------------------------------------------------


async def test_format_regex_that_spends_its_cpu_budget_is_a_failed_item_not_bad() -> None:
    scorer = fmt(mode="regex", pattern=CATASTROPHIC, regex_match="search", regex_timeout_s=0.1)
    started = time.perf_counter()
    [result] = await score(scorer, item(CATASTROPHIC_TEXT))
    assert time.perf_counter() - started < 2.0
    assert result.value is None and result.error_type == "verifier_timeout"
    assert not result.cacheable


async def test_format_think_answer_and_json_read_a_megabyte_in_linear_time() -> None:
    spaces = " " * 500_000
    think = spaces + "<think>" + "x" * 500_000 + "</think><answer>1</answer>" + spaces
    openings = "```json\n" * 125_000  # fences pair up left to right: the last is empty
    started = time.perf_counter()
    [ok] = await score(fmt(), item(think))
    [fenced] = await score(fmt(mode="json"), item(openings + '```json\n{"a": 1}\n```'))
    assert time.perf_counter() - started < 1.0
    assert ok.value == 1.0 and fenced.value == 1.0


# -- SyncScorer: where a batch runs ------------------------------------------------


class ThreadProbe(SyncScorer):
    kind = "thread_probe"

    def __init__(self) -> None:
        super().__init__("probe", SyncScorer.Options())
        self.threads: set[int] = set()

    def score_one(self, item: ScoreInput) -> ScoreResult:
        self.threads.add(threading.get_ident())
        return ScoreResult(value=1.0)


async def test_sync_scorer_runs_by_text_size_not_item_count() -> None:
    loop_thread = threading.get_ident()
    few_but_large, many_but_tiny = ThreadProbe(), ThreadProbe()
    await few_but_large.score_batch([item("x" * 15_000), item("x" * 15_000)])
    await many_but_tiny.score_batch([item("x" * 10) for _ in range(50)])
    assert few_but_large.threads and loop_thread not in few_but_large.threads
    assert many_but_tiny.threads == {loop_thread}


# -- python: deadlines, id and the cache key, faults at validation -----------------


@pytest.fixture
def hanging_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module whose functions hang on the response "hang" until released."""
    (tmp_path / "hanging_rewards.py").write_text(
        textwrap.dedent(
            """
            import asyncio, threading
            release = threading.Event()
            threads = set()

            def hang(response):
                threads.add(threading.current_thread().name)
                if response == "hang":
                    release.wait(10)
                return 1.0

            async def hang_async(response):
                if response == "hang":
                    await asyncio.sleep(3600)
                return 1.0
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "hanging_rewards"
    sys.modules["hanging_rewards"].release.set()  # let the unkillable thread finish
    sys.modules.pop("hanging_rewards", None)


@pytest.mark.parametrize("function", ["hang", "hang_async"])
async def test_python_hung_call_times_out_alone(hanging_module: str, function: str) -> None:
    options = {"function": f"{hanging_module}:{function}", "timeout_s": 0.2}
    scorer = PythonScorer("p", PythonScorer.Options.model_validate(options))
    started = time.perf_counter()
    results = await score(scorer, item("ok"), item("hang"), item("ok"))
    assert time.perf_counter() - started < 1.5
    assert [r.value for r in results] == [1.0, None, 1.0]
    assert results[1].error_type == "timeout" and not results[1].cacheable
    assert results[1].error == "no result within timeout_s (0.2s)"
    await scorer.close()


async def test_python_sync_calls_run_in_the_scorers_own_pool(hanging_module: str) -> None:
    scorer = PythonScorer("mine", PythonScorer.Options(function=f"{hanging_module}:hang"))
    await score(scorer, *(item(str(i)) for i in range(5)))
    names = sys.modules[hanging_module].threads
    assert names and all(name.startswith("referee-mine") for name in names)
    await scorer.close()


def test_python_timeout_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        PythonScorer.Options(function=f"{REWARDS}:constant", timeout_s=0)


async def test_python_id_is_passed_only_when_named_and_then_keys_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "id_rewards.py").write_text("def by_id(response, id):\n    return len(id)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a, b = item("x", id="a"), item("x", id="bb")

    takes_all = PythonScorer("p", PythonScorer.Options(function=f"{REWARDS}:fields_present"))
    assert takes_all.cache_fields() == FIELDS
    [result] = await score(takes_all, a)
    assert "id" not in result.aspects  # **fields does not receive it
    fingerprint = takes_all.fingerprint()
    assert cache_key(fingerprint, a, FIELDS) == cache_key(fingerprint, b, FIELDS)

    names_id = PythonScorer("p", PythonScorer.Options(function="id_rewards:by_id"))
    fields = names_id.cache_fields()
    assert fields == (*FIELDS, "id")
    assert [r.value for r in await score(names_id, a, b)] == [1.0, 2.0]
    fingerprint = names_id.fingerprint()
    assert cache_key(fingerprint, a, fields) != cache_key(fingerprint, b, fields)
    narrowed = PythonScorer(
        "p", PythonScorer.Options(function="id_rewards:by_id", reads=["response"])
    )
    assert narrowed.cache_fields() == ("response", "id")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"function": f"{REWARDS}:nope"},
            f"function {REWARDS}:nope: module '{REWARDS}' has no attribute 'nope'",
        ),
        ({"function": "no_such_pkg.mod:f"}, "function no_such_pkg.mod:f: No module named"),
        ({"function": f"{REWARDS}:__all__"}, "is not callable"),
        (
            {"function": f"{REWARDS}:exact_answer", "kwargs": {"bogus": 1}},
            f"function {REWARDS}:exact_answer: takes no arguments ['bogus'] (from `kwargs`)",
        ),
        (
            {"function": f"{REWARDS}:exact_answer", "reads": ["response"]},
            "requires argument 'reference'",
        ),
    ],
)
def test_python_unusable_function_fails_option_validation(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        PythonScorer.Options.model_validate(options)
    assert message in str(info.value)


def test_python_module_that_fails_to_import_fails_option_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_rewards.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValidationError, match="importing failed: RuntimeError: no GPU here"):
        PythonScorer.Options(function="broken_rewards:f")


async def test_python_setup_still_checks_the_signature() -> None:
    options = PythonScorer.Options.model_construct(
        function=f"{REWARDS}:exact_answer", kwargs={"bogus": 1}
    )  # skips validation, as if the function changed since
    with pytest.raises(TypeError, match=r"takes no arguments \['bogus'\]"):
        await PythonScorer("p", options).setup()


# -- length ------------------------------------------------------------------------


def test_length_missing_tokenizer_fails_option_validation(tmp_path: Path) -> None:
    options = {"mode": "target", "target": 5, "unit": "tokens"}
    with pytest.raises(ValidationError, match=r"neither a tokenizer\.json file") as info:
        LengthScorer.Options.model_validate({**options, "tokenizer": "org/absent-model"})
    assert "tried" in str(info.value) and "models--org--absent-model" in str(info.value)
    with pytest.raises(ValidationError, match=r"no tokenizer\.json in folder"):
        LengthScorer.Options.model_validate({**options, "tokenizer": str(tmp_path)})


def _input(response: str) -> ScoreInput:
    return score_input(response, "1", "x")


async def test_format_json_mode_calls_hostile_json_bad_format_not_an_error() -> None:
    scorer = FormatScorer("fmt", FormatScorer.Options(mode="json"))
    await scorer.setup()
    for text in ["1" * 5000, "[" * 100_000]:
        (result,) = await scorer.score_batch([_input(text)])
        assert result.error is None and result.value == 0.0
        assert result.reason and result.reason.startswith("invalid JSON")


@pytest.mark.parametrize(
    ("scorer", "inline"),
    [
        (MatchScorer("m", MatchScorer.Options(extract="<answer>(.*?)</answer>")), False),
        (MatchScorer("m", MatchScorer.Options(mode="regex", pattern="a+")), False),
        (MatchScorer("m", MatchScorer.Options(mode="normalized")), True),
        (FormatScorer("f", FormatScorer.Options(mode="regex", pattern="a+")), False),
        (FormatScorer("f", FormatScorer.Options(mode="json")), False),
        (FormatScorer("f", FormatScorer.Options(mode="think_answer")), True),
    ],
    ids=["match-extract", "match-regex", "match-normalized", "format-regex", "format-json",
         "format-think-answer"],
)  # fmt: skip
async def test_timed_regex_work_never_runs_on_the_event_loop(
    scorer: SyncScorer, inline: bool
) -> None:
    loop_thread = threading.current_thread()
    threads = await scoring_threads(scorer, [_input("<answer>1</answer>")])
    if inline:  # regex-free checks of a small batch are cheaper than a thread hop
        assert threads == {loop_thread}
    else:
        assert loop_thread not in threads


def test_fingerprint_tracks_the_versions_of_libraries_that_decide_rewards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import referee.scorers.base as base
    from referee.scorers.rules.math import MathScorer

    scorer = MathScorer("m", MathScorer.Options())
    assert "math-verify" in MathScorer.libraries
    before = scorer.fingerprint()
    real = base._distribution_version
    monkeypatch.setattr(
        base, "_distribution_version",
        lambda name: "999.0" if name == "math-verify" else real(name),
    )  # fmt: skip
    # an upgrade takes a restart: a scorer built after it has the new fingerprint
    assert MathScorer("m", MathScorer.Options()).fingerprint() != before
