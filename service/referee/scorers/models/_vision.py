"""Vision-language models for the classifier and the judge's local backends: telling a VLM
from a text model, its processor (image preprocessing + tokenizer + chat template), its
sequence-classification class, an item's conversation with its images in order, and the
processor's image tensors of one item (batched by concatenation: every VLM in transformers
takes the images of a batch as one stack, in the order of their placeholder tokens).

A VLM reward model is served like a text one: ``AutoModelForSequenceClassification`` where
transformers defines a class for it (Gemma 3), else transformers' own generic head
(``GenericForSequenceClassification``, the class LlamaForSequenceClassification is made
of) over the VLM's base model: a ``score`` linear layer read at the last token, so a
Qwen2-VL or LLaVA checkpoint with a ``score`` head loads as it was saved.

torch, transformers and PIL are imported inside the functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "ImageLike",
    "as_pil",
    "chat_images",
    "image_data_url",
    "image_digest",
    "is_vision_config",
    "item_conversation",
    "item_has_images",
    "item_images",
    "load_processor",
    "merge_vision",
    "openai_content",
    "sequence_classifier_class",
    "strip_images",
    "vision_encode",
    "without_images",
]

# An image as the scorers receive it: referee.media.ImageData (encoded bytes, decoded on
# demand), or a PIL image; see :func:`as_pil`.
ImageLike = Any

# Processor outputs that are the text side; everything else is image data to concatenate.
_TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def is_vision_config(config: Any) -> bool:
    """A vision-language model: its config has a vision tower."""
    return getattr(config, "vision_config", None) is not None


def load_processor(
    ref: str, *, use_fast: bool, trust_remote_code: bool, revision: str | None
) -> Any:
    """The model's processor. ``use_fast=False`` takes the PIL image processors (no
    torchvision needed; the reference numerics)."""
    import transformers

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if int(transformers.__version__.split(".")[0]) >= 5:
        kwargs["backend"] = "torchvision" if use_fast else "pil"
    else:
        kwargs["use_fast"] = use_fast
    if revision is not None:
        kwargs["revision"] = revision
    return transformers.AutoProcessor.from_pretrained(ref, **kwargs)


def sequence_classifier_class(config: Any) -> Any:
    """The sequence-classification class of a VLM config: transformers' own where it has one,
    else its generic head composed with the model family's pretrained base (as transformers
    composes LlamaForSequenceClassification)."""
    import transformers
    from transformers.modeling_layers import GenericForSequenceClassification
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_MAPPING_NAMES,
    )

    model_type = config.model_type
    own = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    if own is not None:
        return getattr(transformers, own)
    names = MODEL_MAPPING_NAMES.get(model_type)
    if not names:
        raise ValueError(f"model type {model_type!r}: transformers has no base model for it")
    base_name: str = names if isinstance(names, str) else names[0]
    base = getattr(transformers, base_name)
    pretrained = next((c for c in base.__mro__[1:] if c.__name__.endswith("PreTrainedModel")), None)
    if pretrained is None:
        raise ValueError(f"model type {model_type!r}: no PreTrainedModel class found")
    name = base_name.removesuffix("Model") + "ForSequenceClassification"
    return type(name, (GenericForSequenceClassification, pretrained), {})


def as_pil(image: ImageLike) -> Any:
    """The decoded PIL image (RGB) of an item's image; an image that does not decode raises
    ``referee.media.ImageDecodeError`` (the item's ``invalid_image`` error)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    return image.decode("RGB")


def image_digest(image: ImageLike) -> str:
    """What identifies an image's content (a judge call's key): the sha256 of its bytes."""
    digest = getattr(image, "sha256", None)
    if isinstance(digest, str):
        return digest
    pil = as_pil(image)
    h = hashlib.sha256(f"{pil.mode}:{pil.size}:".encode())
    h.update(pil.tobytes())
    return h.hexdigest()


def vision_encode(
    processor: Any, text: str, images: Sequence[ImageLike]
) -> tuple[list[int], dict[str, torch.Tensor]]:
    """One rendered conversation and its images through the processor: the token ids
    (image placeholders expanded) and the image tensors. Special tokens as the processor's
    own ``apply_chat_template`` adds them (none again when the template wrote a BOS)."""
    tok = processor.tokenizer
    add_special = not (tok.bos_token is not None and text.startswith(tok.bos_token))
    encoded = processor(
        text=[text],
        images=[as_pil(i) for i in images] or None,
        add_special_tokens=add_special,
        return_tensors="pt",
    )
    ids = [int(t) for t in encoded["input_ids"][0]]
    extra = {k: v for k, v in encoded.items() if k not in _TEXT_KEYS}
    return ids, extra


def merge_vision(parts: Sequence[dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor]:
    """The image tensors of a batch's rows, concatenated in row order."""
    import torch

    present = [p for p in parts if p]
    if not present:
        return {}
    keys = present[0].keys()
    return {k: torch.cat([p[k] for p in present if k in p], dim=0) for k in keys}


def item_conversation(
    item: Any, response: str | None = None
) -> tuple[list[dict[str, Any]], list[ImageLike]]:
    """An item as chat messages whose content is a list of parts (``{"type": "text"}``,
    ``{"type": "image"}``: what VLM chat templates render), and its images in the order of
    their parts: ``messages``' image parts, or the prompt's images before its text and the
    response's before its text. ``response`` replaces the response's text."""
    if item.messages is not None:
        images = list(item.message_images())
        messages = []
        for m in item.messages:
            content = m["content"]
            if isinstance(content, str):
                parts = [{"type": "text", "text": content}]
            else:
                parts = [
                    {"type": "image"} if p.get("type") == "image"
                    else {"type": "text", "text": str(p.get("text", ""))}
                    for p in content
                ]  # fmt: skip
            messages.append({"role": m["role"], "content": parts})
        if response is not None:
            kept = [p for p in messages[-1]["content"] if p["type"] == "image"]
            messages[-1]["content"] = [*kept, {"type": "text", "text": response}]
        return messages, images
    text = item.response if response is None else response
    image: dict[str, Any] = {"type": "image"}
    messages = [
        {"role": "user", "content": [*[image] * len(item.prompt_images),
                                     {"type": "text", "text": item.prompt}]},
        {"role": "assistant", "content": [*[image] * len(item.response_images),
                                          {"type": "text", "text": text}]},
    ]  # fmt: skip
    return messages, [*item.prompt_images, *item.response_images]


def item_has_images(item: Any) -> bool:
    return bool(item.prompt_images or item.response_images)


def item_images(item: Any) -> tuple[list[ImageLike], list[ImageLike]]:
    """An item's images split by side: the question's (prompt images, or the images of every
    turn before the response) and the response's."""
    return list(item.prompt_images), list(item.response_images)


def without_images(value: Any) -> Any:
    """A chat with each image part's image replaced by its digest: what identifies a call."""
    if isinstance(value, dict):
        if value.get("type") == "image" and "image" in value:
            return {"type": "image", "image_sha256": image_digest(value["image"])}
        return {k: without_images(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_images(v) for v in value]
    return value


def chat_images(chat: Sequence[dict[str, Any]]) -> list[ImageLike]:
    """The images of a chat's image parts, in order."""
    return [
        part["image"]
        for message in chat
        if not isinstance(message["content"], str)
        for part in message["content"]
        if part.get("type") == "image"
    ]


def strip_images(chat: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat as a chat template renders it: image parts without their image objects."""
    return [
        m
        if isinstance(m["content"], str)
        else {
            **m,
            "content": [{"type": "image"} if p.get("type") == "image" else p for p in m["content"]],
        }
        for m in chat
    ]


def image_data_url(image: ImageLike) -> str:
    """An image as a ``data:`` URL: its original bytes (no re-encoding) once they are known
    to decode, else PNG."""
    import base64
    import io

    pil = as_pil(image)  # an image that does not decode is the item's error, not the server's
    data, fmt = getattr(image, "data", None), getattr(image, "format", None)
    if not (isinstance(data, bytes) and isinstance(fmt, str) and fmt != "unknown"):
        buffer = io.BytesIO()
        pil.save(buffer, format="PNG")
        data, fmt = buffer.getvalue(), "PNG"
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(data).decode('ascii')}"


def openai_content(chat: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat as the OpenAI chat API takes it: image parts as ``image_url`` parts."""
    return [
        m
        if isinstance(m["content"], str)
        else {
            **m,
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(p["image"])}}
                if p.get("type") == "image"
                else p
                for p in m["content"]
            ],
        }
        for m in chat
    ]
