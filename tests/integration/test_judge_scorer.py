"""The judge on a real model (SmolLM2-135M-Instruct, transformers backend). Its judgments
are weak; these tests check the mechanics: chat-templated prompts, logprob-weighted scores
in range and independent of batch-mates, parse failures as per-item errors, pairwise
comparisons in both orders, seeded votes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from referee.engine import with_peers
from referee.scorers import scorer_class
from referee.scorers.judge import JudgeScorer
from tests.support import score_input

pytest.importorskip("torch", reason="the transformers judge needs the models extra")

Q = "What is the capital of France?"
SHOTS = [
    {"prompt": "What is 2+2?", "response": "4", "answer": "Score: 9"},
    {"prompt": "What is 3+3?", "response": "7", "answer": "Score: 2"},
]


async def judge(model: Path, **options: Any) -> JudgeScorer:
    cls = scorer_class("judge")
    made = cls("judge", cls.Options.model_validate({"model": str(model), **options}))
    assert isinstance(made, JudgeScorer)
    await made.setup()
    return made


async def test_logprob_scores_are_in_range_and_the_same_alone_and_batched(smollm: Path) -> None:
    s = await judge(smollm, rubric="Correct and concise.")
    items = [
        score_input("Paris.", id="a", prompt=Q),
        score_input("It is London, I think.", id="b", prompt=Q),
    ]
    batched = await s.score_batch(items)
    for item, result in zip(items, batched, strict=True):
        assert result.error is None and result.value is not None
        assert 0.0 <= result.value <= 1.0
        assert 0.0 < result.aspects["verdict_mass"] <= 1.0
        (alone,) = await s.score_batch([item])
        assert alone.value == pytest.approx(result.value, abs=1e-4)
    raw = await judge(smollm, rubric="Correct and concise.", normalize=False)
    (kept,) = await raw.score_batch(items[:1])
    assert kept.value == pytest.approx(1 + 9 * batched[0].value, abs=1e-3)  # the 1..10 scale


async def test_the_prompt_goes_through_the_models_chat_template(smollm: Path) -> None:
    s = await judge(smollm, system_prompt="You grade answers.")
    backend = s.backend
    text = backend.lm.render(s.prompt.chat({"prompt": Q, "response": "Paris"}), True)  # type: ignore[attr-defined]
    assert text.startswith("<|im_start|>system\nYou grade answers.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


async def test_an_unparseable_answer_is_a_per_item_error_after_the_bounded_retry(
    smollm: Path,
) -> None:
    s = await judge(
        smollm,
        mode="parse",
        verdict_pattern=r"VERDICT=(\d+)",
        parse_retries=1,
        sampling={"max_new_tokens": 6},
    )
    (result,) = await s.score_batch([score_input("Paris.", prompt=Q)])
    assert result.value is None and result.error_type == "judge_parse_error"
    assert "after 2 attempt(s)" in (result.error or "")


async def test_parse_mode_reads_the_verdict_and_returns_the_critique(smollm: Path) -> None:
    s = await judge(
        smollm, mode="parse", few_shot=SHOTS, return_critique=True, sampling={"max_new_tokens": 6}
    )
    (result,) = await s.score_batch([score_input("Paris.", prompt=Q)])
    assert result.error is None and result.value is not None and 0.0 <= result.value <= 1.0
    assert result.reason is not None and "Score:" in result.reason


async def test_pairwise_compares_each_pair_in_both_orders_and_win_rates_sum_to_one(
    smollm: Path,
) -> None:
    s = await judge(smollm, template="pairwise", group_mode="pairwise")
    calls: list[list[dict[str, str]]] = []
    original = s.backend.label_probs

    async def spy(chats: Any, prefix: str, labels: list[str]) -> Any:
        calls.extend(chats)
        return await original(chats, prefix, labels)

    s.backend.label_probs = spy  # type: ignore[method-assign]
    items = with_peers(
        [
            score_input("Paris.", id="a", prompt=Q, group="g"),
            score_input("London.", id="b", prompt=Q, group="g"),
        ]
    )
    a, b = await s.score_batch(items)
    assert len(calls) == 2  # (a, b) and (b, a), each judged once for both items
    firsts = ["[Response A]\nParis." in c[-1]["content"] for c in calls]
    assert sorted(firsts) == [False, True]
    assert a.value is not None and b.value is not None
    # holds whichever item a verdict credits; tests/e2e/test_judge_direction.py checks that
    assert a.value + b.value == pytest.approx(1.0, abs=1e-6)
    assert a.aspects["comparisons"] == 1.0 and 0.0 <= a.aspects["position_consistency"] <= 1.0
    (alone,) = await s.score_batch([score_input("Paris.", prompt=Q, group="g")])
    assert alone.error_type == "invalid_input"


async def test_votes_are_k_seeded_samples_and_repeat_exactly(smollm: Path) -> None:
    def voting(seed: int) -> dict[str, Any]:
        sampling = {"temperature": 1.0, "seed": seed, "max_new_tokens": 5}
        return {"mode": "vote", "votes": 3, "few_shot": SHOTS, "sampling": sampling}

    s = await judge(smollm, **voting(7))
    item = score_input("Paris.", prompt=Q)
    (first,) = await s.score_batch([item])
    (again,) = await s.score_batch([item])
    assert first.error is None, first.error
    assert first.value == again.value and 0.0 <= (first.value or 0.0) <= 1.0
    assert first.aspects["parsed"] * 3 == pytest.approx(round(first.aspects["parsed"] * 3))
    other = scorer_class("judge")(
        "j", scorer_class("judge").Options.model_validate({"model": str(smollm), **voting(8)})
    )
    assert other.fingerprint() != s.fingerprint()  # sampling settings key the cache


async def test_listwise_ranks_a_group_in_one_prompt_and_rewards_follow_the_ranking(
    smollm: Path,
) -> None:
    """Three responses, one generation for the whole group. The tiny model may or may not
    write a valid ranking: either every item's reward comes from the same permutation
    (1, 0.5, 0), or every item gets the same per-item parse error, never a guess."""
    s = await judge(smollm, template="listwise", group_mode="listwise", mode="parse",
                    parse_retries=0, sampling={"max_new_tokens": 12})  # fmt: skip
    prompts: list[Any] = []
    original = s.backend.generate

    async def spy(chats: Any, *args: Any, **kwargs: Any) -> Any:
        prompts.extend(chats)
        return await original(chats, *args, **kwargs)

    s.backend.generate = spy  # type: ignore[method-assign]
    items = with_peers([score_input(r, id=r[:5], prompt=Q, group="g")
                        for r in ("Paris.", "London.", "It is Paris, the capital.")])  # fmt: skip
    results = await s.score_batch(items)
    assert len(prompts) == 1  # one prompt ranks the whole group
    text = prompts[0][-1]["content"]
    assert all(f"[Response {k}]" in text for k in (1, 2, 3))
    if all(r.error is None for r in results):
        assert sorted(r.value for r in results) == [0.0, 0.5, 1.0]
    else:
        assert {r.error_type for r in results} == {"judge_parse_error"}
