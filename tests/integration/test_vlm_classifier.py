"""VLM reward models through `kind: classifier` on a tiny LLaVA built from its config (no
weights can be downloaded here): the served reward equals a plain transformers script's
(processor chat template, one item at a time) to 1e-4 in fp32, items with 0 to 3 images of
different sizes score the same alone and in a batch under both padding sides, and the
misuses fail clearly (images to a text model, an input with images over max_length)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from referee.scorers import scorer_class
from referee.scorers.base import ScoreInput
from referee.scorers.models._model import ModelScorer
from referee_client.schema import RewardItem
from tests.support import score_input

torch = pytest.importorskip("torch", reason="model scorers need the models extra")
Image = pytest.importorskip("PIL.Image", reason="images need Pillow")

QUESTIONS = ["What is in the picture?", "Describe the image.", "Is the square red?"]
ANSWERS = ["A red square on a white background.", "A cat sits on a blue mat.", "Yes", "No."]


def picture(seed: int) -> Any:
    """A random RGB image of a random size (the processor resizes and crops it)."""
    rng = random.Random(seed)
    w, h = rng.randint(20, 90), rng.randint(20, 90)
    data = bytes(rng.randrange(256) for _ in range(w * h * 3))
    return Image.frombytes("RGB", (w, h), data)


def vlm_item(i: int, n_images: int, *, image_in_answer: bool = False) -> ScoreInput:
    """A chat item whose user turn holds ``n_images`` images before its question, as the
    server sees it: built by the SDK (PIL images encoded as PNG) and normalised."""
    return ScoreInput.from_item(
        RewardItem(id=f"v{i}", messages=conversation(i, n_images, image_in_answer))
    )


def conversation(i: int, n_images: int, image_in_answer: bool = False) -> list[dict[str, Any]]:
    """OpenAI-style messages (images as `image_url` parts holding PIL images)."""
    rng = random.Random(i)
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": picture(100 * i + k)} for k in range(n_images)
    ]
    parts.append({"type": "text", "text": rng.choice(QUESTIONS)})
    answer: Any = rng.choice(ANSWERS) * (1 + i % 3)
    if image_in_answer:
        answer = [{"type": "image_url", "image_url": picture(7_000 + i)},
                  {"type": "text", "text": answer}]  # fmt: skip
    return [{"role": "user", "content": parts}, {"role": "assistant", "content": answer}]


def plain_reward(model_dir: Path, messages: list[dict[str, Any]]) -> float:
    """What a user's script computes for one item: the processor's chat template over the
    conversation with its images, the model's score logit (transformers' generic
    sequence-classification head over LlavaModel, as LlamaForSequenceClassification is)."""
    import transformers
    from transformers.modeling_layers import GenericForSequenceClassification

    cls = type(
        "LlavaForSequenceClassification",
        (GenericForSequenceClassification, transformers.LlavaPreTrainedModel),
        {},
    )
    processor = transformers.AutoProcessor.from_pretrained(str(model_dir))
    model = cls.from_pretrained(str(model_dir)).eval()
    chat = [
        {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]
         if isinstance(m["content"], str)
         else [{"type": "image", "image": p["image_url"]} if p["type"] == "image_url" else p
               for p in m["content"]]}
        for m in messages
    ]  # fmt: skip
    inputs = processor.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        return float(model(**inputs).logits[0, 0])


def classifier(model: Path, **options: Any) -> ModelScorer:
    cls = scorer_class("classifier")
    made = cls("vlm-rm", cls.Options.model_validate({"model": str(model), **options}))
    assert isinstance(made, ModelScorer)
    return made


async def test_vlm_reward_equals_a_plain_transformers_script_item_by_item(
    tiny_llava_rm: Path,
) -> None:
    s = classifier(tiny_llava_rm, dtype="float32", device="cpu")
    await s.setup()
    assert s.is_vision
    specs = [(i, n, False) for i, n in enumerate([1, 2, 0, 3])] + [(9, 1, True)]
    items = [vlm_item(i, n, image_in_answer=a) for i, n, a in specs]
    served = await s.score_batch(items)
    values = []
    for (i, n, a), item, result in zip(specs, items, served, strict=True):
        assert result.error is None, result
        expected = plain_reward(tiny_llava_rm, conversation(i, n, a))
        assert result.value == pytest.approx(expected, abs=1e-4), item.id
        values.append(result.value)
    assert max(values) - min(values) > 0.05  # the images and texts move the reward


@pytest.mark.parametrize("side", ["right", "left"])
async def test_vlm_reward_is_the_same_alone_and_in_a_batch_of_mixed_image_counts(
    tiny_llava_rm: Path, side: str
) -> None:
    s = classifier(tiny_llava_rm, padding_side=side, device="cpu")
    await s.setup()
    assert s.model.padding_side == side
    items = [vlm_item(i, i % 4) for i in range(12)]
    together = await s.score_batch(items)
    for item, batched in zip(items, together, strict=True):
        (alone,) = await s.score_batch([item])
        assert batched.error is None and alone.value is not None and batched.value is not None
        assert batched.value == pytest.approx(alone.value, abs=1e-4), item.id


async def test_the_same_conversation_with_another_image_gets_another_reward(
    tiny_llava_rm: Path,
) -> None:
    s = classifier(tiny_llava_rm, device="cpu")
    await s.setup()
    same = conversation(1, 1)
    other = conversation(1, 1)
    other[0]["content"][0] = {"type": "image_url", "image_url": picture(424242)}
    a, b = (
        ScoreInput.from_item(RewardItem(id=k, messages=m)) for k, m in (("a", same), ("b", other))
    )
    ra, rb = await s.score_batch([a, b])
    assert ra.value is not None and rb.value is not None
    assert abs(ra.value - rb.value) > 1e-3


async def test_an_image_that_does_not_decode_is_a_per_item_error(tiny_llava_rm: Path) -> None:
    from tests.media import truncated_jpeg

    s = classifier(tiny_llava_rm, device="cpu")
    await s.setup()
    broken = ScoreInput.from_item(
        RewardItem(
            id="bad", prompt="What is it?", response="A cat.", prompt_images=[truncated_jpeg()]
        )
    )
    bad, good = await s.score_batch([broken, vlm_item(0, 1)])
    assert bad.error_type == "invalid_image" and "does not decode" in (bad.error or "")
    assert good.error is None and good.value is not None


async def test_prompt_and_response_images_are_the_user_and_assistant_turns(
    tiny_llava_rm: Path,
) -> None:
    """An item with prompt/response fields is scored as the chat it stands for."""
    s = classifier(tiny_llava_rm, device="cpu")
    await s.setup()
    a, b = picture(1), picture(2)
    fields = ScoreInput.from_item(RewardItem(id="f", prompt="Describe the image.",
                                             prompt_images=[a], response="A cat.",
                                             response_images=[b]))  # fmt: skip
    chat = [{"role": "user", "content": [{"type": "image_url", "image_url": a},
                                         {"type": "text", "text": "Describe the image."}]},
            {"role": "assistant", "content": [{"type": "image_url", "image_url": b},
                                              {"type": "text", "text": "A cat."}]}]  # fmt: skip
    (result,) = await s.score_batch([fields])
    assert result.value == pytest.approx(plain_reward(tiny_llava_rm, chat), abs=1e-4)


async def test_an_item_with_images_over_max_length_is_rejected_not_cut(
    tiny_llava_rm: Path,
) -> None:
    s = classifier(tiny_llava_rm, device="cpu", max_length=24, truncation="left")
    await s.setup()
    long_text, short = await s.score_batch([vlm_item(0, 3), score_input("ok", prompt="hi")])
    assert long_text.error_type == "input_too_long"
    assert "never cut" in (long_text.error or "")
    assert short.error is None and short.value is not None


async def test_a_text_reward_model_gives_items_with_images_a_per_item_error(
    minilm_classifier: Path,
) -> None:
    s = classifier(minilm_classifier, input="pair")
    await s.setup()
    with_image, text = await s.score_batch([vlm_item(0, 1), score_input("fine", prompt="q")])
    assert with_image.error_type == "invalid_input"
    assert "reads text only" in (with_image.error or "")
    assert text.error is None


async def test_a_vlm_reward_model_needs_the_chat_input(tiny_llava_rm: Path) -> None:
    s = classifier(tiny_llava_rm, input="pair")
    with pytest.raises(ValueError, match="input: chat"):
        await s.setup()
