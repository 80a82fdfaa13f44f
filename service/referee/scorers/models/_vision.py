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
    "image_digest",
    "is_vision_config",
    "load_processor",
    "merge_vision",
    "sequence_classifier_class",
    "vision_encode",
]

# An image as the scorers receive it (a decoded PIL image, or the wire schema's decoded
# media object, which carries one); see :func:`as_pil`.
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
    """The PIL image of an image the scorers receive."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    pil = getattr(image, "pil", None)
    if pil is not None:
        return pil() if callable(pil) else pil
    raise TypeError(f"not an image: {type(image).__name__}")


def image_digest(image: ImageLike) -> str:
    """What identifies an image's content (a judge call's key): its decoded pixels."""
    digest = getattr(image, "digest", None)
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


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [dict(p) for p in content]


def item_conversation(
    item: Any, response: str | None = None
) -> tuple[list[dict[str, Any]], list[ImageLike]]:
    """An item as chat messages whose content is a list of parts (``{"type": "text"}``,
    ``{"type": "image"}``: what VLM chat templates render), and its images in the order of
    their parts. ``response`` replaces the response's text."""
    images: list[ImageLike] = []

    def take(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for part in parts:
            if part.get("type") in ("image", "image_url"):
                images.append(part.get("image"))
                out.append({"type": "image"})
            else:
                out.append({"type": "text", "text": str(part.get("text", ""))})
        return out

    if item.messages is not None:
        messages = [
            {"role": m["role"], "content": take(_parts(m["content"]))} for m in item.messages
        ]
        if response is not None:
            kept = [p for p in messages[-1]["content"] if p["type"] == "image"]
            messages[-1]["content"] = [*kept, {"type": "text", "text": response}]
        return messages, images
    prompt_parts = [{"type": "image", "image": i} for i in getattr(item, "prompt_images", ()) or ()]
    answer_parts = [
        {"type": "image", "image": i} for i in getattr(item, "response_images", ()) or ()
    ]
    text = item.response if response is None else response
    messages = [
        {"role": "user", "content": take([*prompt_parts, {"type": "text", "text": item.prompt}])},
        {"role": "assistant", "content": take([*answer_parts, {"type": "text", "text": text}])},
    ]
    return messages, images


def item_has_images(item: Any) -> bool:
    if getattr(item, "prompt_images", None) or getattr(item, "response_images", None):
        return True
    for m in item.messages or ():
        if not isinstance(m["content"], str):
            if any(p.get("type") in ("image", "image_url") for p in m["content"]):
                return True
    return False


def item_images(item: Any) -> tuple[list[ImageLike], list[ImageLike]]:
    """An item's images split by side: the question's (prompt images, images of every turn
    but the last) and the response's (response images, images of the last turn)."""
    if item.messages is None:
        return (
            list(getattr(item, "prompt_images", ()) or ()),
            list(getattr(item, "response_images", ()) or ()),
        )
    sides: tuple[list[ImageLike], list[ImageLike]] = ([], [])
    last = len(item.messages) - 1
    for i, message in enumerate(item.messages):
        if not isinstance(message["content"], str):
            for part in message["content"]:
                if part.get("type") in ("image", "image_url"):
                    sides[i == last].append(part.get("image"))
    return sides


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
    """An image as a ``data:`` URL: its original bytes when the image carries them (no
    re-encoding), else PNG."""
    import base64
    import io

    data, mime = getattr(image, "data", None), getattr(image, "mime", None)
    if not (isinstance(data, bytes) and isinstance(mime, str)):
        buffer = io.BytesIO()
        as_pil(image).save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


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
