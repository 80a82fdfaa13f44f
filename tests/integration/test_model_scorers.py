"""Model scorers on real weights (MiniLM and SmolLM2 backbones): batch invariance under
both padding sides, PRM step placement, explicit truncation, hostile inputs, OOM splitting,
fingerprints and start-up checks."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from referee.config import ConfigError, load_settings
from referee.scorers import scorer_class
from referee.scorers.base import ScoreResult
from referee.scorers.models._model import ModelScorer
from tests.integration.conftest import serve_app
from tests.models import minilm_dir, smollm_gguf
from tests.support import score_input

torch = pytest.importorskip("torch", reason="model scorers need the models extra")

WORDS = "the model adds two and three then checks the sum again before it answers".split()


def scorer(kind: str, **options: Any) -> ModelScorer:
    cls = scorer_class(kind)
    made = cls(kind, cls.Options.model_validate(options))
    assert isinstance(made, ModelScorer)
    return made


def skewed_items(n: int, longest: int, seed: int = 0) -> list[Any]:
    rng = random.Random(seed)
    lengths = [1, longest] + [rng.choice([1, 2, 3, 5, 8, longest // 4, longest // 2, longest])
                              for _ in range(n - 2)]  # fmt: skip
    return [
        score_input(" ".join(rng.choice(WORDS) for _ in range(k)), id=f"i{i}",
                    prompt="Add two and three." * (1 + i % 3))
        for i, k in enumerate(lengths)
    ]  # fmt: skip


async def batched_and_alone(s: ModelScorer, items: list[Any]) -> float:
    """The largest change of any item's value (and aspects) between scoring it alone and in
    one batch with all of ``items``, relative to the value's size when that is above 1: a
    padding or mask bug moves rewards by tenths, float summation order by ~1e-6 of them."""
    together = await s.score_batch(items)
    worst = 0.0
    for item, batched in zip(items, together, strict=True):
        (alone,) = await s.score_batch([item])
        assert batched.error is None and alone.error is None, (batched, alone)
        assert alone.value is not None and batched.value is not None
        worst = max(worst, abs(alone.value - batched.value) / max(1.0, abs(alone.value)))
        for name, value in alone.aspects.items():
            worst = max(worst, abs(value - batched.aspects[name]) / max(1.0, abs(value)))
    return worst


async def test_bert_reward_is_the_same_alone_and_in_a_batch_of_32_skewed_lengths(
    minilm_classifier: Path,
) -> None:
    s = scorer("classifier", model=str(minilm_classifier), input="pair", aspects={"a": 1, "b": 2})
    await s.setup()
    assert s.model.padding_side == "right"
    assert await batched_and_alone(s, skewed_items(32, 200)) <= 1e-4


async def test_an_encoder_asked_to_pad_left_pads_right_so_its_first_token_stays_cls(
    minilm_classifier: Path,
) -> None:
    s = scorer("classifier", model=str(minilm_classifier), input="pair", padding_side="left")
    await s.setup()
    assert s.model.padding_side == "right"


@pytest.mark.parametrize("side", ["right", "left"])
async def test_llama_reward_is_the_same_alone_and_in_a_batch_of_32_skewed_lengths(
    smollm_classifier: Path, side: str
) -> None:
    s = scorer("classifier", model=str(smollm_classifier), padding_side=side)
    await s.setup()
    assert await batched_and_alone(s, skewed_items(32, 48)) <= 1e-4


@pytest.mark.parametrize("side", ["right", "left"])
async def test_response_logprob_is_the_same_alone_and_in_a_batch(smollm: Path, side: str) -> None:
    s = scorer("likelihood", model=str(smollm), padding_side=side, input="text")
    await s.setup()
    assert await batched_and_alone(s, skewed_items(12, 40, seed=1)) <= 1e-4


async def test_prm_scores_one_step_after_each_step_and_nowhere_else(minilm_prm: Path) -> None:
    s = scorer("prm", model=str(minilm_prm), step_token="[unused0]", input="pair")
    await s.setup()
    response = "Add 2 and 3.\n\nThat is 5.\n\n\n\n  \n\nSo the answer is 5."
    encoded = s.encode(score_input(response, prompt="What is 2+3?"))
    ids = encoded.seqs[0].ids
    step = s.step_id
    tokens = s.model.tokenizer.convert_ids_to_tokens(ids)
    positions = [i for i, t in enumerate(ids) if t == step]
    assert len(positions) == 3  # blank "steps" are not steps
    # each step token follows its step's last word, and the pair ends [SEP] after the last
    assert [tokens[p - 1] for p in positions] == [".", ".", "."]
    assert tokens[positions[0] - 2] == "3" and tokens[positions[1] - 2] == "5"
    assert positions[-1] == len(ids) - 2 and tokens[-1] == "[SEP]"

    (result,) = await s.score_batch([score_input(response, prompt="What is 2+3?")])
    assert result.steps is not None and len(result.steps) == 3
    assert result.value == min(result.steps)
    for aggregate, expected in [("last", result.steps[-1]), ("mean", sum(result.steps) / 3),
                                ("product", result.steps[0] * result.steps[1] * result.steps[2])]:  # fmt: skip
        other = scorer("prm", model=str(minilm_prm), step_token="[unused0]", aggregate=aggregate)
        await other.setup()
        (again,) = await other.score_batch([score_input(response, prompt="What is 2+3?")])
        assert again.value == pytest.approx(expected, abs=1e-6)

    # the step token written into the response adds no step
    (sneaky,) = await s.score_batch([score_input("a[unused0]b[unused0]c", prompt="q")])
    assert sneaky.steps is not None and len(sneaky.steps) == 1


async def test_unknown_step_token_fails_at_start_naming_the_scorer(minilm_prm: Path) -> None:
    s = scorer("prm", model=str(minilm_prm), step_token="<extra_0>")
    with pytest.raises(ValueError, match="step_token '<extra_0>' is not a token"):
        await s.setup()


def model_config(scorers: dict[str, Any]) -> dict[str, Any]:
    return {"scorers": scorers, "pipelines": {name: {"reward": name} for name in scorers}}


async def post(client: Any, pipeline: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await client.post("/v1/rewards", json={"pipeline": pipeline, "items": items})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert [r["id"] for r in results] == [i["id"] for i in items]
    return results


async def test_over_long_inputs_are_rejected_or_truncated_as_configured_never_silently(
    minilm_classifier: Path,
) -> None:
    opts = {"model": str(minilm_classifier), "input": "pair", "max_length": 32}
    config = model_config({
        "strict": {"kind": "classifier", "options": opts},
        "keep_end": {"kind": "classifier", "options": {**opts, "truncation": "left"}},
    })  # fmt: skip
    long = " ".join(["word"] * 100) + " final answer"
    items = [{"id": "short", "prompt": "q", "response": "fine"},
             {"id": "long", "prompt": "q", "response": long}]  # fmt: skip
    async with serve_app(config) as (client, _):
        strict = await post(client, "strict", items)
        assert strict[0]["error"] is None and strict[0]["truncated"] is False
        assert strict[1]["reward"] is None
        assert strict[1]["error"]["type"] == "input_too_long"
        assert "takes at most 32" in strict[1]["error"]["message"]

        kept = await post(client, "keep_end", items)
        assert kept[0]["truncated"] is False and "keep_end" not in (kept[0]["info"] or {})
        assert kept[1]["error"] is None and kept[1]["truncated"] is True
        assert "kept 32 of" in kept[1]["info"]["keep_end"]

    # the truncated reward is the model's reward on exactly the kept tokens, [CLS] + the
    # last 31, with their own token types ([CLS] is segment 0, the rest the response's)
    s = scorer("classifier", model=str(minilm_classifier), input="pair")
    await s.setup()
    encoded = s.model.tokenizer("q", long)
    ids, types = encoded["input_ids"], encoded["token_type_ids"]

    def reward_of(kept_ids: list[int], kept_types: list[int] | None = None) -> float:
        typed = {"token_type_ids": torch.tensor([kept_types])} if kept_types else {}
        with torch.inference_mode():
            out = s.model.model(input_ids=torch.tensor([kept_ids]), **typed)
        return float(out.logits[0, 0])

    want = reward_of([ids[0], *ids[-31:]], [types[0], *types[-31:]])
    assert abs(kept[1]["reward"] - want) <= 1e-4
    # and neither of the near misses: the same tokens with segment 0 throughout, or the
    # first 32 tokens (right truncation) -- so the check above can tell them apart
    assert abs(want - reward_of([ids[0], *ids[-31:]])) > 1e-3
    assert abs(want - reward_of(ids[:32], types[:32])) > 1e-3


async def test_hostile_inputs_get_a_clear_per_item_outcome(
    minilm_classifier: Path, minilm_prm: Path, smollm: Path
) -> None:
    config = model_config({
        "rm": {"kind": "classifier", "options": {"model": str(minilm_classifier), "input": "pair"}},
        "rm_cut": {"kind": "classifier", "options": {"model": str(minilm_classifier),
                                                     "input": "pair", "truncation": "left"}},
        "prm": {"kind": "prm", "options": {"model": str(minilm_prm), "step_token": "[unused0]"}},
        "sim": {"kind": "similarity", "options": {"model": str(minilm_dir())}},
        "lp": {"kind": "likelihood", "options": {"model": str(smollm), "max_length": 64}},
    })  # fmt: skip
    megabyte = "All work and no play makes a dull answer. " * 23_800  # 999,600 chars: the cap
    items = [
        {"id": "empty", "prompt": "q", "response": "", "reference": "r"},
        {"id": "control", "prompt": "q\x00\x07", "response": "a\x00b\x1b[31m\u202e\ufeff\x7f",
         "reference": "\x00"},
        {"id": "huge", "prompt": "q", "response": megabyte, "reference": "r"},
        {"id": "plain", "prompt": "q", "response": "The answer is 5.", "reference": "5"},
    ]  # fmt: skip
    async with serve_app(config) as (client, engine):
        rm = await post(client, "rm", items)
        assert [r["error"] is None for r in rm] == [True, True, False, True]
        assert rm[2]["error"]["type"] == "input_too_long"
        cut = await post(client, "rm_cut", items)
        assert all(r["error"] is None for r in cut) and cut[2]["truncated"] is True
        prm = await post(client, "prm", items)
        assert prm[0]["error"]["type"] == "empty_response"
        assert prm[1]["error"] is None and len(prm[1]["steps"]) == 1
        assert prm[2]["error"]["type"] == "input_too_long" and prm[3]["error"] is None
        sim = await post(client, "sim", items)
        assert [r["error"] is None for r in sim] == [True, True, False, True]
        lp = await post(client, "lp", items)
        assert lp[0]["error"]["type"] == "empty_response" and lp[1]["error"] is None
        assert lp[2]["error"]["type"] == "input_too_long"
        assert all(engine.health()["scorers"][s]["ready"] for s in ("rm", "prm", "sim", "lp"))


async def test_a_batch_that_runs_out_of_memory_is_split_until_items_fit(
    minilm_classifier: Path,
) -> None:
    """GPU memory cannot run out on this CPU machine, so the forward pass raises torch's own
    OutOfMemoryError whenever a batch holds more than 2 rows or more than 150 tokens a row:
    what is tested is the splitting, with the real model scoring what fits."""

    class SmallGpu(scorer_class("classifier")):  # type: ignore[misc]
        calls: list[int] = []

        def forward(self, encoded: list[Any]) -> list[ScoreResult]:
            self.calls.append(len(encoded))
            if len(encoded) > 2 or max(len(e.seqs[0].ids) for e in encoded) > 150:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(encoded)  # type: ignore[no-any-return]

    s = SmallGpu(
        "rm", SmallGpu.Options.model_validate({"model": str(minilm_classifier), "input": "pair"})
    )
    await s.setup()
    items = [score_input("short answer " * k, id=f"i{k}", prompt="q") for k in (1, 2, 3, 4, 90)]
    results = await s.score_batch(items)
    assert [r.error is None for r in results] == [True, True, True, True, False]
    assert results[4].error_type == "out_of_memory" and "alone" in (results[4].error or "")
    plain = scorer("classifier", model=str(minilm_classifier), input="pair")
    await plain.setup()
    expected = await plain.score_batch(items[:4])
    for got, want in zip(results[:4], expected, strict=True):
        assert got.value == pytest.approx(want.value, abs=1e-5)
    assert SmallGpu.calls[0] == 5 and 1 in SmallGpu.calls


async def test_model_loads_from_a_gguf_file_and_matches_the_dequantised_directory(
    smollm: Path,
) -> None:
    item = score_input("Paris is the capital of France.", prompt="Capital of France?")
    from_gguf = scorer("likelihood", model=str(smollm_gguf()))
    from_dir = scorer("likelihood", model=str(smollm))
    await from_gguf.setup()
    await from_dir.setup()
    (a,), (b,) = await from_gguf.score_batch([item]), await from_dir.score_batch([item])
    assert a.value is not None and a.value == pytest.approx(b.value, abs=1e-4)


def test_fingerprint_follows_weights_dtype_and_scoring_options_not_the_path(
    tmp_path: Path, minilm_classifier: Path
) -> None:
    def fp(path: Path, **options: Any) -> str:
        return scorer("classifier", model=str(path), **options).fingerprint()

    copy = Path(shutil.copytree(minilm_classifier, tmp_path / "copy"))
    assert fp(copy) == fp(minilm_classifier)  # content, not location
    base = fp(minilm_classifier)
    assert fp(minilm_classifier, dtype="bfloat16") != base
    assert fp(minilm_classifier, max_length=64) != base
    assert fp(minilm_classifier, input="text") != base
    assert fp(minilm_classifier, index=1) != base
    (copy / "model.safetensors").write_bytes(b"changed weights")
    assert fp(copy) != base


def test_config_errors_name_the_scorer_and_what_to_fix(
    tmp_path: Path, minilm_classifier: Path
) -> None:
    def load(options: dict[str, Any], kind: str = "classifier") -> None:
        load_settings(data=model_config({"m": {"kind": kind, "options": options}}), environ={})

    with pytest.raises(ConfigError, match=r"scorers\.m.*no such file or directory"):
        load({"model": str(tmp_path / "missing.gguf")})
    with pytest.raises(ConfigError, match=r"scorers\.m.*truncation"):
        load({"model": str(minilm_classifier), "truncation": "middle"})
    with pytest.raises(ConfigError, match="followup needs at least one `positive`"):
        load({"model": str(minilm_classifier), "mode": "followup"}, kind="likelihood")
    with pytest.raises(ConfigError, match="package 'no_such_pkg' is not installed"):
        load({"model": "package:no_such_pkg/model"})


async def test_reward_read_at_an_appended_token_equals_the_plain_forward(
    smollm_classifier: Path,
) -> None:
    """InternLM2-Reward's recipe: the template's text without added special tokens, then
    a dedicated reward token; here the backbone's <|im_start|> (id 1, not its pad token)
    plays that token."""
    s = scorer("classifier", model=str(smollm_classifier), add_special_tokens=False,
               append_token_id=1)  # fmt: skip
    await s.setup()
    item = score_input("The answer is 5.", prompt="What is 2+3?")
    (result,) = await s.score_batch([item])
    tok = s.model.tokenizer
    chat = [
        {"role": "user", "content": item.prompt},
        {"role": "assistant", "content": item.response},
    ]
    ids = tok(tok.apply_chat_template(chat, tokenize=False), add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        expected = float(s.model.model(input_ids=torch.tensor([[*ids, 1]])).logits[0, 0])
    assert result.value == pytest.approx(expected, abs=1e-4)
    plain = scorer("classifier", model=str(smollm_classifier))
    await plain.setup()
    (without,) = await plain.score_batch([item])
    assert without.value is not None
    assert without.value != pytest.approx(expected, abs=1e-3)  # the token is really read


async def test_small_requests_tokenized_while_a_huge_one_is_tokenizing_all_succeed(
    minilm_classifier: Path,
) -> None:
    """A huge request tokenizes in a worker thread; small ones arriving meanwhile must not
    use the same fast tokenizer at the same time ("Already borrowed")."""
    import asyncio

    s = scorer("classifier", model=str(minilm_classifier), input="pair", truncation="left")
    await s.setup()
    huge = score_input("many words here " * 40_000, id="huge", prompt="q")
    smalls = [score_input(f"short answer {i}", id=f"s{i}", prompt="q") for i in range(40)]
    results = await asyncio.gather(s.prepare([huge]), *(s.prepare([x]) for x in smalls))
    for prepared in results:
        assert not isinstance(prepared[0].payload, ScoreResult), prepared[0].payload
