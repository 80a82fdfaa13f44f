"""Lexical similarity (no model): BLEU and chrF are sacreBLEU's sentence scores scaled to
[0, 1], ROUGE-L is the LCS F-measure; `against: group` averages over the item's peers."""

from __future__ import annotations

import pytest

from referee.scorers.models._lexical import lexical_similarity, rouge_l
from referee.scorers.models.similarity import SimilarityScorer
from tests.support import score_input

sacrebleu = pytest.importorskip("sacrebleu", reason="lexical metrics need the models extra")


def test_rouge_l_is_the_lcs_f_measure_over_lowercased_words() -> None:
    # LCS("the cat sat on the mat", "The cat was on a mat!") = the cat on mat = 4 words
    assert rouge_l("the cat sat on the mat", "The cat was on a mat!") == pytest.approx(
        2 * (4 / 6) * (4 / 6) / (4 / 6 + 4 / 6)
    )
    assert rouge_l("abc", "abc") == 1.0
    assert rouge_l("", "abc") == rouge_l("abc", "") == rouge_l("a b", "c d") == 0.0


def test_bleu_and_chrf_are_sacrebleu_sentence_scores_scaled_to_one() -> None:
    hyp, ref = "the quick brown fox jumps", "the quick brown fox jumped over"
    assert lexical_similarity("bleu", hyp, [ref]) == pytest.approx(
        sacrebleu.sentence_bleu(hyp, [ref]).score / 100
    )
    assert lexical_similarity("chrf", hyp, [ref]) == pytest.approx(
        sacrebleu.sentence_chrf(hyp, [ref]).score / 100
    )
    assert lexical_similarity("bleu", ref, [ref]) == pytest.approx(1.0)


async def test_group_consistency_is_the_mean_over_peers_and_lone_items_get_an_error() -> None:
    scorer = SimilarityScorer("s", SimilarityScorer.Options.model_validate(
        {"metric": "rouge_l", "against": "group"}))  # fmt: skip
    await scorer.setup()  # lexical: no model is loaded
    assert scorer.health() == {"ready": True, "metric": "rouge_l"}
    item = score_input("a b c d", group="g")
    import dataclasses

    with_peers = dataclasses.replace(item, peers=("a b c d", "x y"))
    alone = dataclasses.replace(item, peers=())
    results = await scorer.score_batch([with_peers, alone])
    assert results[0].value == pytest.approx((1.0 + 0.0) / 2)
    assert results[1].error is not None and "alone" in results[1].error
    assert scorer.cache_fields() == ("response", "peers")


async def test_lexical_texts_over_max_chars_are_rejected_or_cut_as_configured() -> None:
    def make(truncation: str) -> SimilarityScorer:
        return SimilarityScorer("s", SimilarityScorer.Options.model_validate(
            {"metric": "chrf", "max_chars": 100, "truncation": truncation}))  # fmt: skip

    long = score_input("word " * 100, reference="word " * 10)
    (strict,) = await make("reject").score_batch([long])
    assert strict.error_type == "input_too_long"
    (cut,) = await make("right").score_batch([long])
    assert cut.error is None and cut.truncated and "100 characters" in (cut.reason or "")


async def test_engine_gives_each_grouped_item_its_peers_in_the_same_request() -> None:
    from referee.config import load_settings
    from referee.engine import RewardEngine
    from referee_client.schema import RewardRequest

    settings = load_settings(data={
        "scorers": {"consistency": {"kind": "similarity",
                                    "options": {"metric": "rouge_l", "against": "group"}}},
        "pipelines": {"c": {"reward": "consistency"}},
    }, environ={})  # fmt: skip
    engine = RewardEngine(settings)
    await engine.start()
    try:
        request = RewardRequest.model_validate({"pipeline": "c", "items": [
            {"id": "a", "prompt": "q", "response": "one two three", "group": "g"},
            {"id": "b", "prompt": "q", "response": "one two three", "group": "g"},
            {"id": "c", "prompt": "q", "response": "four five", "group": "g"},
            {"id": "d", "prompt": "q", "response": "one two three", "group": "h"},
        ]})  # fmt: skip
        results = (await engine.score(request)).results
    finally:
        await engine.close()
    assert results[0].reward == pytest.approx(0.5)  # same as b (1.0), nothing like c (0.0)
    assert results[2].reward == 0.0
    assert results[3].error is not None  # alone in group h
