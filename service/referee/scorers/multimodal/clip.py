"""CLIP-family image rewards (``kind: clip``): image-text and image-image similarity, and
reward heads on CLIP.

``compare`` says what is compared:
- ``text_to_image``: the response image against the prompt text (text-to-image alignment);
- ``captioning``: the response text against the prompt image (a caption reward);
- ``image_to_reference``: the response image against the reference image(s);
- ``image_head``: a head over the response image's normalised embedding (``head``: an
  aesthetic-style predictor, LAION's shape).

``score: clipscore`` is CLIPScore, ``weight · max(cos, 0)`` (Hessel et al., w = 2.5);
``cosine`` the raw cosine; ``logits`` the model's own ``logits_per_image`` (its
``logit_scale``, and ``logit_bias`` where the model has one), which makes a preference
model trained on CLIP (PickScore-style: a model scoring a (prompt, image) pair) a reward.
An item with several images gets the mean over its pairs.

The model loads with transformers' AutoModel and its processor (a hub id or a directory:
the same code), images are decoded and preprocessed off the event loop with the PIL image
processor (no torchvision), and a batch's cost is its images: ``batching.max_batch_tokens``
counts images for this kind. Identical images and texts in a batch run once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from referee.media import INVALID_IMAGE, ImageData, ImageDecodeError
from referee.scorers.base import Prepared, ScoreInput, ScoreResult
from referee.scorers.models._hf import LoadedModel, ModelOptions, ModelSource, _hash_path
from referee.scorers.models._model import ItemRejected, ModelScorer, Seq
from referee.scorers.multimodal._head import LinearHead, load_head

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["ClipOptions", "ClipScorer"]

Compare = Literal["text_to_image", "captioning", "image_to_reference", "image_head"]
_READS: dict[str, tuple[str, ...]] = {
    "text_to_image": ("prompt", "response_images"),
    "captioning": ("response", "prompt_images"),
    "image_to_reference": ("response_images", "reference_images"),
    "image_head": ("response_images",),
}


class ClipOptions(ModelOptions):
    compare: Compare = "text_to_image"
    """text_to_image: response image vs prompt text; captioning: response text vs prompt image;
    image_to_reference: response image vs reference image(s); image_head: `head` over the
    response image's embedding."""
    score: Literal["clipscore", "cosine", "logits"] = "clipscore"
    """clipscore: weight · max(cos, 0); cosine: the cosine; logits: the model's own
    logits_per_image (logit_scale as the model defines it: PickScore-style preference
    models). Not used by image_head."""
    weight: float = Field(default=2.5, gt=0, description="CLIPScore's w (score: clipscore).")
    head: Path | None = Field(
        default=None,
        description="compare: image_head: a safetensors file of linear layers (`N.weight`, "
        "`N.bias`) applied to the L2-normalised image embedding (LAION aesthetic predictor "
        "shape); the last layer gives one value.",
    )
    head_activation: Literal["none", "relu", "gelu"] = Field(
        default="none", description="Activation between the head's layers."
    )
    processor: str | None = Field(
        default=None, description="Image processor source, if not `model` (a hub id or directory)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ClipOptions:
        if (self.compare == "image_head") != (self.head is not None):
            raise ValueError("`head` is given exactly when compare is image_head")
        if self.score == "logits" and self.compare not in ("text_to_image", "captioning"):
            raise ValueError(
                "score: logits compares an image with a text (text_to_image, captioning)"
            )
        if self.head is not None and not self.head.is_file():
            raise ValueError(f"head {self.head}: no such file")
        return self


@dataclass(slots=True)
class ClipInput:
    """One item ready for the model: its text's tokens (text modes), its images' pixels
    (keyed by sha256) and, for image_to_reference, the reference images' pixels."""

    text: Seq | None
    images: list[tuple[str, np.ndarray | None]]
    references: list[tuple[str, np.ndarray | None]] = field(default_factory=list)
    truncated: str | None = None

    @property
    def cost(self) -> int:
        return len(self.images) + len(self.references)


class ClipScorer(ModelScorer):
    kind = "clip"
    Options: ClassVar[type[ModelOptions]] = ClipOptions
    options: ClipOptions
    reads = ("prompt", "response", "prompt_images", "response_images", "reference_images")
    batch_order = "arrival"  # type: ignore[assignment]
    auto_class = "AutoModel"
    default_batching: ClassVar[dict[str, object]] = {
        "max_batch_size": 64,
        "max_batch_tokens": 64,  # images: the cost of a clip item is its image count
        "max_concurrent_batches": 1,
        "max_wait_ms": 5.0,
    }

    def __init__(self, name: str, options: ClipOptions) -> None:
        super().__init__(name, options)
        self.image_processor: Any = None
        self.head: LinearHead | None = None

    def cache_fields(self) -> tuple[str, ...]:
        return _READS[self.options.compare]

    def fingerprint_extra(self) -> dict[str, object]:
        extra = super().fingerprint_extra()
        if self.options.processor is not None:
            extra["processor"] = ModelSource.parse(self.options.processor).identity(
                self.options.revision
            )
        if self.options.head is not None:
            extra["head"] = _hash_path(self.options.head)
        return extra

    def fingerprint_options(self) -> dict[str, object]:
        options = super().fingerprint_options()
        if options.get("head") is not None:
            options["head"] = "file"  # by content (fingerprint_extra), not by path
        return options

    async def setup(self) -> None:
        await super().setup()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load_extras)

    def _load_extras(self) -> None:
        import transformers

        source = ModelSource.parse(self.options.processor or self.options.model)
        kwargs: dict[str, Any] = {"trust_remote_code": self.options.trust_remote_code}
        if self.options.revision is not None:
            kwargs["revision"] = self.options.revision
        if int(transformers.__version__.split(".")[0]) >= 5:
            kwargs["backend"] = "pil"  # PIL/numpy preprocessing: no torchvision needed
        else:  # pragma: no cover - transformers 4
            kwargs["use_fast"] = False
        self.image_processor = transformers.AutoImageProcessor.from_pretrained(source.ref, **kwargs)
        if self.options.head is not None:
            loaded = self.model
            self.head = load_head(self.options.head, self.options.head_activation,
                                  loaded.device, loaded.dtype)  # fmt: skip
            dim = self._embedding_dim()
            if dim is not None and self.head.in_features != dim:
                raise ValueError(
                    f"head {self.options.head} takes {self.head.in_features} features; the "
                    f"model's image embedding has {dim}"
                )

    def _embedding_dim(self) -> int | None:
        config = self.model.model.config
        return getattr(config, "projection_dim", None)

    def after_load(self, loaded: LoadedModel) -> None:
        loaded.padding_side = "right"  # the text tower pools at its end-of-text token

    def health(self) -> dict[str, object]:
        return {**super().health(), "compare": self.options.compare, "score": self.options.score}

    # -- preparing: tokens, decoded and preprocessed images (off the event loop) ----------
    async def prepare(self, items: Sequence[ScoreInput]) -> list[Prepared]:
        return await asyncio.to_thread(self._prepare_items, items)

    def _prepare_items(self, items: Sequence[ScoreInput]) -> list[Prepared]:
        out: list[Prepared] = []
        unique: dict[str, int] = {}  # sha256 -> row: an image repeated in the request (a
        pictures: list[Any] = []  # group's prompt image) is decoded and preprocessed once
        broken: dict[str, str] = {}
        for item in items:
            try:
                encoded, images = self.encode(item)
                for image in images:
                    if image.sha256 in broken:
                        raise ImageDecodeError(broken[image.sha256])
                    if image.sha256 not in unique:
                        try:
                            pictures.append(image.decode("RGB"))
                        except ImageDecodeError as exc:
                            broken[image.sha256] = str(exc)
                            raise
                        unique[image.sha256] = len(pictures) - 1
            except ItemRejected as exc:
                out.append(Prepared(1, ScoreResult.failed(str(exc), exc.error_type)))
            except ImageDecodeError as exc:
                out.append(Prepared(1, ScoreResult.failed(str(exc), INVALID_IMAGE)))
            else:
                out.append(Prepared(max(1, encoded.cost), encoded))
        if pictures:  # one processor call for the request's images (a call has a fixed cost)
            values = self.image_processor(images=pictures, return_tensors="np")["pixel_values"]
            for prepared in out:
                if isinstance(prepared.payload, ClipInput):
                    for slots in (prepared.payload.images, prepared.payload.references):
                        for n, (key, _) in enumerate(slots):
                            slots[n] = (key, values[unique[key]])
        return out

    def encode(self, item: ScoreInput) -> tuple[ClipInput, list[ImageData]]:  # type: ignore[override]
        """The item's tokens and the images it compares (their pixels are filled in by
        one processor call for the whole request)."""
        compare = self.options.compare
        if compare == "captioning":
            images, what = item.prompt_images, "prompt image"
        else:
            images, what = item.response_images, "response image"
        if not images:
            raise ItemRejected(f"compare: {compare} needs a {what}; the item has none",
                               "missing_image")  # fmt: skip
        text: Seq | None = None
        note = None
        if compare in ("text_to_image", "captioning"):
            source = item.prompt if compare == "text_to_image" else item.response
            if not source.strip():
                name = "prompt" if compare == "text_to_image" else "response"
                kind = "missing_field" if name == "prompt" else "empty_response"
                raise ItemRejected(f"compare: {compare} needs a {name} text; it is empty", kind)
            with self._tokenizing:
                ids = self.tokens(source)
            text, note = self.fit(Seq(ids), "prompt" if compare == "text_to_image" else "response")
        references: Sequence[ImageData] = ()
        if compare == "image_to_reference":
            references = item.reference_images
            if not references:
                raise ItemRejected("compare: image_to_reference needs `reference_images`",
                                   "missing_image")  # fmt: skip
        encoded = ClipInput(text, [(i.sha256, None) for i in images],
                            [(i.sha256, None) for i in references], note)  # fmt: skip
        return encoded, [*images, *references]

    # -- the forward pass (the model's thread, inference mode) ----------------------------
    def forward(self, encoded: list[ClipInput]) -> list[ScoreResult]:  # type: ignore[override]
        import numpy as np
        import torch

        loaded = self.model
        rows: dict[str, int] = {}
        stacked: list[np.ndarray] = []
        for x in encoded:
            for key, values in (*x.images, *x.references):
                assert values is not None  # filled in by _prepare_items
                if key not in rows:
                    rows[key] = len(stacked)
                    stacked.append(values)
        pixel_values = torch.from_numpy(np.stack(stacked)).to(loaded.device, loaded.dtype)
        compare = self.options.compare
        if compare in ("text_to_image", "captioning"):
            return self._image_text(encoded, rows, pixel_values)
        out = loaded.model.get_image_features(pixel_values=pixel_values)
        features = out if isinstance(out, torch.Tensor) else out.pooler_output
        embeds = torch.nn.functional.normalize(features.float(), dim=-1)
        results = []
        for x in encoded:
            mine = embeds[[rows[key] for key, _ in x.images]]
            if compare == "image_head":
                assert self.head is not None
                head_values = self.head(mine.to(loaded.dtype)).float().reshape(-1)
                results.append(ScoreResult(float(head_values.mean())))
                continue
            theirs = embeds[[rows[key] for key, _ in x.references]]
            cos = mine @ theirs.T
            results.append(self._result(cos, None))
        return results

    def _image_text(
        self, encoded: list[ClipInput], rows: dict[str, int], pixel_values: torch.Tensor
    ) -> list[ScoreResult]:
        columns: dict[tuple[int, ...], int] = {}
        seqs: list[Seq] = []
        for x in encoded:
            assert x.text is not None
            key = tuple(x.text.ids)
            if key not in columns:
                columns[key] = len(seqs)
                seqs.append(x.text)
        out = self.model.model(**self.collate(seqs), pixel_values=pixel_values)
        image_embeds = out.image_embeds.float()  # normalised by the model
        text_embeds = out.text_embeds.float()
        logits = out.logits_per_image.float()  # [images, texts], as the model scales them
        results = []
        for x in encoded:
            assert x.text is not None
            col = columns[tuple(x.text.ids)]
            image_rows = [rows[key] for key, _ in x.images]
            cos = image_embeds[image_rows] @ text_embeds[col]
            results.append(self._result(cos, logits[image_rows, col]))
        return results

    def _result(self, cos: torch.Tensor, logits: torch.Tensor | None) -> ScoreResult:
        cosine = float(cos.mean())
        if self.options.score == "logits":
            assert logits is not None
            value = float(logits.mean())
        elif self.options.score == "cosine":
            value = cosine
        else:
            value = float((self.options.weight * cos.clamp(min=0.0)).mean())
        return ScoreResult(value, aspects={"cosine": cosine})
