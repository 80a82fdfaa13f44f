"""The scorer contract.

A scorer turns a batch of items into exactly one :class:`ScoreResult` per item, in order.
A failing item yields a result with ``error`` set; it never fails the batch. The batcher
checks the count and isolates the items of a batch that raised.

Subclasses declare:
- ``kind``: the registry name;
- ``Options``: a pydantic model of its configuration (validated at start-up);
- ``reads``: the item fields its output depends on (they form the cache key);
- ``score_batch`` (async) or, for quick pure-Python checks, ``score_one`` via
  :class:`SyncScorer`.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import importlib.metadata
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from referee.media.images import ImageData
from referee_client._media import sniff_format
from referee_client.schema import Image, Message, RewardItem

if TYPE_CHECKING:
    from referee.metrics import Metrics

__all__ = [
    "BATCH_DEADLINE",
    "FIELDS",
    "IMAGE_FIELDS",
    "Prepared",
    "ScoreInput",
    "ScoreResult",
    "Scorer",
    "ScorerOptions",
    "SyncScorer",
    "canonical_json",
    "deadline_passed",
    "past_deadline_result",
]

# The latest time.monotonic() by which anyone still wants the current batch's results.
# Set by the batcher for each batch; scorers check it between items so that work whose
# requests have all timed out stops instead of occupying the scorer.
BATCH_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "referee_batch_deadline", default=None
)


def deadline_passed() -> bool:
    deadline = BATCH_DEADLINE.get()
    return deadline is not None and time.monotonic() > deadline


def past_deadline_result() -> ScoreResult:
    return ScoreResult.failed(
        "the request's deadline passed before this item was scored", "timeout"
    )


# Item fields a scorer may read (and that therefore may enter its cache key).
FIELDS = ("prompt", "response", "messages", "reference", "group", "metadata")
# Image fields (tuples of ImageData) a scorer may read; a cache key hashes their bytes.
IMAGE_FIELDS = ("prompt_images", "response_images", "reference_images")
# The pixel limit an image carries when no server config says otherwise (media settings).
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ScoreInput:
    """What a scorer sees of one item: the request item normalised once.

    Images are :class:`~referee.media.ImageData` (bytes checked at the door, decoded by the
    scorer that reads them). ``prompt_images`` are ``prompt_images`` or the images of the
    turns before the response; ``response_images`` are ``response_images`` or the images of
    the last assistant turn. In ``messages`` a turn with content parts has ``content`` as a
    list of ``{"type": "text", "text": ...}`` and ``{"type": "image", "sha256": ...}``
    (the images in order are :meth:`message_images`).
    """

    id: str
    prompt: str
    response: str
    reference: str | None
    group: str | None
    messages: tuple[dict[str, Any], ...] | None
    metadata: dict[str, Any] | None
    # The responses of the other items of this item's group in the same request; filled
    # only for pipelines with a scorer that reads "peers" (group consistency).
    peers: tuple[str, ...] | None = None
    prompt_images: tuple[ImageData, ...] = ()
    response_images: tuple[ImageData, ...] = ()
    reference_images: tuple[ImageData, ...] = ()
    # Each read field's digest, computed once per item for every scorer's cache key.
    digests: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_item(
        cls, item: RewardItem, *, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    ) -> ScoreInput:
        """``item`` as scorers see it. Its images must be bytes already (the engine resolves
        URLs and paths at the door: ``referee.media.resolve_images``)."""

        def images(values: list[Image], where: str) -> tuple[ImageData, ...]:
            return tuple(
                _image_data(image, max_image_pixels, f"{where}[{k}]")
                for k, image in enumerate(values)
            )

        return cls(
            id=item.id,
            prompt=item.prompt_text(),
            response=item.response_text(),
            reference=item.reference,
            group=item.group,
            messages=tuple(_message_dict(m) for m in item.messages) if item.messages else None,
            metadata=item.metadata,
            prompt_images=images(item.prompt_image_list(), "prompt_images"),
            response_images=images(item.response_image_list(), "response_images"),
            reference_images=images(list(item.reference_images or ()), "reference_images"),
        )

    def message_images(self) -> tuple[ImageData, ...]:
        """The images of ``messages``' image parts, in order (prompt turns, then the
        response's)."""
        return self.prompt_images + self.response_images if self.messages else ()


def _image_data(image: Image, max_pixels: int, where: str) -> ImageData:
    if image.data is None:
        raise ValueError(f"{where}: the image's url was not resolved to bytes")
    return ImageData.of(image.data, sniff_format(image.data) or "unknown", max_pixels, where)


def _message_dict(message: Message) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, str]] = []
    for part in message.content:
        if part.image_url is not None and part.image_url.data is not None:
            parts.append({"type": "image", "sha256": _sha256(part.image_url.data)})
        else:
            parts.append({"type": "text", "text": part.text or ""})
    return {"role": message.role, "content": parts}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(slots=True)
class ScoreResult:
    """One item's result.

    ``value`` is the scalar; ``aspects`` are extra named values addressable in a pipeline
    as ``scorer.aspect``; ``steps`` are step-level scores; ``reason`` explains a value (a
    timeout, a failed check); ``error`` means the item has no value at all.
    ``cacheable`` is False for results that depend on transient conditions (timeouts).
    """

    value: float | None
    aspects: dict[str, float] = field(default_factory=dict)
    steps: list[float] | None = None
    reason: str | None = None
    error: str | None = None
    error_type: str = "scorer_error"
    cacheable: bool = True
    truncated: bool = False

    @classmethod
    def failed(cls, message: str, error_type: str = "scorer_error") -> ScoreResult:
        return cls(value=None, error=message, error_type=error_type, cacheable=False)


@dataclass(frozen=True, slots=True)
class Prepared:
    """An item made ready for batching once, before it is queued: its cost in tokens (what
    the token budget counts) and whatever the scorer wants to keep (token ids), so work
    done to measure an item is not done again to score it."""

    cost: int
    payload: object = None


class ScorerOptions(BaseModel):
    """Base of every scorer's options: unknown keys are errors, not silently ignored.

    A field's docstring (the string literal under it) is its description, which the
    generated configuration reference (docs/reference/config.md) shows."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Scorer:
    kind: ClassVar[str] = ""
    Options: ClassVar[type[ScorerOptions]] = ScorerOptions
    reads: ClassVar[tuple[str, ...]] = ("response",)
    # Bumped when the implementation changes its outputs, so old cache entries miss.
    implementation_version: ClassVar[str] = "1"
    # Distributions whose version can change this scorer's outputs (math-verify, regex, ...):
    # an upgrade changes the fingerprint, so a shared cache never serves the old answers.
    libraries: ClassVar[tuple[str, ...]] = ()
    # How the batcher forms batches: "arrival" (oldest first) or "length" (the oldest item
    # with the waiting items closest to it in cost, so padded batches waste little).
    batch_order: ClassVar[Literal["arrival", "length"]] = "arrival"
    # Batching settings this kind needs unless the config says otherwise (a model scorer
    # runs one batch at a time, with a token budget sized for a model).
    default_batching: ClassVar[dict[str, object]] = {}

    @classmethod
    def batching_defaults(cls, options: ScorerOptions) -> dict[str, object]:
        """``default_batching``, or what these options need instead (a judge whose
        backend batches continuously itself)."""
        return cls.default_batching

    def __init__(self, name: str, options: ScorerOptions) -> None:
        self.name = name
        self.options = options
        self._fingerprint: str | None = None

    # -- lifecycle ---------------------------------------------------------------
    async def setup(self) -> None:
        """Load what the scorer needs (models, worker processes). Called once at start."""

    async def close(self) -> None:
        """Release resources. Called once at shutdown."""

    def health(self) -> dict[str, object]:
        return {"ready": True}

    def memory_bytes(self) -> int | None:
        """Memory the loaded scorer holds (a model's weights), when it can be told."""
        return None

    def memory_estimate(self) -> int | None:
        """Memory this scorer will need once set up, told before loading (a reload checks
        that a second copy fits); None when it cannot be told or is negligible."""
        return None

    def bind_metrics(self, metrics: Metrics) -> None:
        """Called once by the engine: a scorer that counts events of its own (the judge
        guard's hits) keeps the counters it needs."""

    # -- scoring -----------------------------------------------------------------
    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        raise NotImplementedError

    def cost(self, item: ScoreInput) -> int:
        """Estimated tokens of an item, for token-budget batching (≈4 characters a token)."""
        return max(1, len(item.response) // 4)

    async def prepare(self, items: Sequence[ScoreInput]) -> list[Prepared]:
        """Called once per item before it is queued. Model scorers tokenize here; the
        token count is the item's cost and the ids come back in :meth:`score_prepared`."""
        return [Prepared(self.cost(item)) for item in items]

    async def score_prepared(
        self, items: Sequence[ScoreInput], prepared: Sequence[Prepared]
    ) -> list[ScoreResult]:
        """Score a batch whose items went through :meth:`prepare`."""
        return await self.score_batch(items)

    def cache_fields(self) -> tuple[str, ...]:
        """The item fields the output depends on; may depend on options."""
        return self.reads

    def fingerprint(self) -> str:
        """Hash of everything that changes this scorer's outputs. Computed once per scorer
        (options are frozen): for a model it reads the weight files' metadata, and the
        engine, its runners and /v1/pipelines all ask for it."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        payload = {
            "kind": self.kind,
            "impl": self.implementation_version,
            "libraries": {name: _distribution_version(name) for name in self.libraries},
            "options": self.fingerprint_options(),
            **self.fingerprint_extra(),
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:32]

    def fingerprint_options(self) -> dict[str, object]:
        """The options as they enter the fingerprint."""
        return self.options.model_dump(mode="json")

    def fingerprint_extra(self) -> dict[str, object]:
        """Extra fingerprint material (a model revision, a file hash)."""
        return {}


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class SyncScorer(Scorer):
    """A scorer whose per-item work is quick pure Python. A batch with less than
    ``inline_chars`` characters of responses runs on the event loop (a thread hop would
    cost more than the work); a larger one runs in a worker thread so the loop stays
    responsive. An item that raises fails alone."""

    inline_chars: ClassVar[int] = 20_000

    def runs_inline(self, items: Sequence[ScoreInput]) -> bool:
        """Whether scoring ``items`` is cheap enough to do on the event loop."""
        return sum(len(item.response) for item in items) < self.inline_chars

    def score_one(self, item: ScoreInput) -> ScoreResult:
        raise NotImplementedError

    def _score_all(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        results = []
        for item in items:
            if deadline_passed():
                results.append(past_deadline_result())
                continue
            try:
                results.append(self.score_one(item))
            except Exception as exc:  # one bad item must not sink its batch
                results.append(ScoreResult.failed(f"{type(exc).__name__}: {exc}"))
        return results

    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        if self.runs_inline(items):
            return self._score_all(items)
        return await asyncio.to_thread(self._score_all, items)
