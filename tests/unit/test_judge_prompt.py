"""Judge prompts and verdict arithmetic without a model: template rendering (rubric,
principles, few-shot, system prompt), strict templates, option checks, and how label
probabilities become a verdict distribution (from a local LM or an endpoint's logprobs)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from referee.scorers.judge.backends import verdict_distribution
from referee.scorers.judge.backends.openai import label_probs_from_logprobs
from referee.scorers.judge.options import JudgeOptions
from referee.scorers.judge.templates import JudgePrompt


def options(**kw: object) -> JudgeOptions:
    return JudgeOptions.model_validate({"model": "m", **kw})


def test_the_pointwise_chat_has_system_few_shot_and_the_item_with_rubric_and_principles() -> None:
    prompt = JudgePrompt(
        options(
            rubric="Correct and concise.",
            principles=["Be honest", "Cite nothing"],
            system_prompt="You grade.",
            scale=(1, 5),
            mode="parse",
            few_shot=[{"prompt": "2+2?", "response": "4", "answer": "Score: 5"}],
        )
    )
    chat = prompt.chat({"prompt": "3+3?", "response": "6"})
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[0]["content"] == "You grade."
    assert chat[2]["content"] == "Score: 5" and "2+2?" in chat[1]["content"]
    last = chat[3]["content"]
    for part in (
        "3+3?",
        "6",
        "Correct and concise.",
        "- Be honest",
        "- Cite nothing",
        "from 1 (worst) to 5 (best)",
        'exactly "Score: N"',
    ):
        assert part in last
    assert prompt.verdicts.labels == {"1": 0.0, "2": 0.25, "3": 0.5, "4": 0.75, "5": 1.0}


def test_logprobs_mode_asks_for_the_verdict_only_and_keeps_the_scale_when_told() -> None:
    prompt = JudgePrompt(options(normalize=False))
    assert 'Answer "Score: N" only.' in prompt.chat({"response": "r"})[-1]["content"]
    assert prompt.verdicts.prefix == "Score: "
    assert prompt.verdicts.labels["10"] == 10.0


def test_a_custom_template_reads_item_fields_and_fails_on_unknown_names() -> None:
    prompt = JudgePrompt(
        options(custom_template="Q={{ prompt }} R={{ response }} M={{ metadata.k }}")
    )
    assert prompt.user_turn({"prompt": "q", "response": "r", "metadata": {"k": 7}}) == "Q=q R=r M=7"
    bad = JudgePrompt(options(custom_template="{{ respnse }}"))
    with pytest.raises(Exception, match="respnse"):
        bad.user_turn({"response": "r"})
    with pytest.raises(ValueError, match="custom_template"):
        JudgePrompt(options(custom_template="{% if %}"))


def test_verdicts_are_read_strictly_from_the_last_match() -> None:
    v = JudgePrompt(options(template="reference", mode="parse")).verdicts
    assert v.find("Verdict: No ... on reflection Verdict: Yes") == "Yes"
    assert v.value_of("yes") == 1.0
    assert v.find("I think yes") is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"group_mode": "pairwise"}, "needs template: pairwise"),
        ({"template": "pairwise"}, "set group_mode"),
        ({"mode": "vote"}, "temperature > 0"),
        ({"return_critique": True}, "generating mode"),
        ({"verdict_pattern": "Score"}, "needs a group"),
        ({"backend": "openai"}, "needs `endpoint`"),
        ({"truncation": "right"}, "reject or left"),
    ],
)
def test_inconsistent_options_fail_at_start_up(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        options(**bad)


def test_a_label_that_prefixes_another_loses_that_labels_mass() -> None:
    # P("1" as text) = 0.5 includes P("10") = 0.3: "1" alone is 0.2; then normalised.
    dist = verdict_distribution({"1": 0.5, "10": 0.3, "2": 0.2})
    assert dist == pytest.approx({"1": 2 / 7, "10": 3 / 7, "2": 2 / 7})
    assert verdict_distribution({"Yes": 0.0, "No": 0.0}) is None


def test_endpoint_logprobs_are_read_along_the_greedy_path() -> None:
    lp = math.log
    content = [
        {
            "token": " 1",
            "logprob": lp(0.6),
            "top_logprobs": [
                {"token": " 1", "logprob": lp(0.6)},
                {"token": "2", "logprob": lp(0.3)},
            ],
        },
        {
            "token": "0",
            "logprob": lp(0.5),
            "top_logprobs": [
                {"token": "0", "logprob": lp(0.5)},
                {"token": "\n", "logprob": lp(0.4)},
            ],
        },
    ]
    probs = label_probs_from_logprobs(content, ["1", "2", "10"])
    assert probs == pytest.approx({"1": 0.6, "2": 0.3, "10": 0.3})
