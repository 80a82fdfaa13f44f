"""The wire schema: the one definition of what crosses the network.

The server imports these models; the gRPC ``.proto`` mirrors them field for field.
Keep this module free of server dependencies: a trainer installs only pydantic and httpx.
"""

from __future__ import annotations

import binascii
import math
from collections import Counter
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from referee_client._json import json_data

__all__ = [
    "ConfigApplyRequest",
    "ContentPart",
    "ErrorBody",
    "ErrorDetail",
    "Image",
    "ItemError",
    "Message",
    "Outcome",
    "ReloadResult",
    "RewardItem",
    "RewardOptions",
    "RewardRequest",
    "RewardResponse",
    "RewardResult",
    "ScorerList",
    "ScorerReloadRequest",
    "ScorerStatus",
    "ServerLimits",
    "Usage",
]

MAX_ID_LENGTH = 256

# What happened to one item: a verdict about the answer ("scored"), no verdict because
# verification failed ("failed": a timeout, an overloaded or broken verifier; the error's
# `retryable` says whether trying again can help), or an item that cannot be scored as
# sent ("invalid": a missing reference, an input too long).
Outcome = Literal["scored", "failed", "invalid"]
MAX_REFERENCE_REWARDS = 1024
MAX_GROUP_SIZE = 4096


class _Documented(BaseModel):
    """A field's docstring is its description (in the OpenAPI document and the docs)."""

    model_config = ConfigDict(use_attribute_docstrings=True)


class _Strict(_Documented):
    model_config = ConfigDict(extra="forbid")


class Image(_Strict):
    """One image: its ``url`` or its raw ``data``, not both.

    ``url`` is a ``data:`` URL (base64; always accepted), a path on the server (``/abs``
    or ``file:///abs``; only under the server's ``media.roots``), or an ``http(s)`` URL
    (only on hosts the server's ``media.url_hosts`` allows). ``data`` is the encoded file
    (PNG, JPEG or WebP): raw bytes over gRPC, base64 in JSON. In Python, give a PIL image,
    a numpy array (HxW or HxWxC, uint8 or floats in [0, 1]), a ``pathlib.Path`` of a local
    file or ``bytes``: the SDK encodes it (PNG) and sends it as a data URL over HTTP and as
    bytes over gRPC. A plain string is a ``url``.
    """

    model_config = ConfigDict(
        extra="forbid", ser_json_bytes="base64", use_attribute_docstrings=True
    )  # fmt: skip

    url: str | None = None
    """A `data:` URL, a server-side path under `media.roots`, or an allow-listed http(s) URL."""
    data: bytes | None = None
    """The image file's bytes (base64 in JSON); instead of `url`."""
    detail: Literal["auto", "low", "high"] | None = None
    """OpenAI's detail hint, carried for judges that pass it on; scorers ignore it."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # a plain string is accepted as the image's url
        schema = handler(core_schema)
        return {"anyOf": [schema, {"type": "string", "description": "The image's `url`."}]}

    @model_validator(mode="before")
    @classmethod
    def _from_python(cls, value: object) -> object:
        if isinstance(value, str):
            return {"url": value}
        if isinstance(value, dict):
            data = value.get("data")
            if isinstance(data, str):  # JSON carries bytes as base64
                try:
                    from referee_client._media import b64decode

                    return {**value, "data": b64decode(data)}
                except (binascii.Error, ValueError):
                    raise ValueError("`data` is not base64") from None
            return value
        if isinstance(value, BaseModel):
            return value
        from referee_client._media import encode_image  # numpy/PIL only when used

        return {"data": encode_image(value)}

    @model_validator(mode="after")
    def _one_source(self) -> Image:
        if (self.url is None) == (self.data is None):
            raise ValueError("give an image's `url` or its `data`, exactly one")
        if self.url is not None and not self.url:
            raise ValueError("`url` is empty")
        return self

    @model_serializer(mode="wrap")
    def _data_url_in_json(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        # JSON carries an image the way OpenAI-style clients do: as a data URL.
        out: dict[str, Any] = handler(self)
        if info.mode_is_json() and self.data is not None:
            from referee_client._media import data_url

            out.pop("data", None)
            out["url"] = data_url(self.data)
        return out


class ContentPart(_Strict):
    """One part of a turn's content, OpenAI-style: ``{"type": "text", "text": ...}`` or
    ``{"type": "image_url", "image_url": {"url": ...}}``."""

    type: Literal["text", "image_url"]
    """`text` or `image_url`."""
    text: str | None = None
    """The text of a `text` part."""
    image_url: Image | None = None
    """The image of an `image_url` part."""

    @model_validator(mode="after")
    def _matches_type(self) -> ContentPart:
        if self.type == "text" and (self.text is None or self.image_url is not None):
            raise ValueError("a `text` part has `text` and no `image_url`")
        if self.type == "image_url" and (self.image_url is None or self.text is not None):
            raise ValueError("an `image_url` part has `image_url` and no `text`")
        return self


class Message(_Strict):
    """One chat turn. ``content`` is text, or a list of content parts (text and images,
    OpenAI-style) for a vision-language conversation."""

    role: Literal["system", "user", "assistant", "tool"]
    """Who speaks."""
    content: str | list[ContentPart]
    """The turn's text, or its parts: `{"type": "text", "text": ...}` and
    `{"type": "image_url", "image_url": {"url": ...}}`."""

    @field_validator("content")
    @classmethod
    def _parts_not_empty(cls, value: str | list[ContentPart]) -> str | list[ContentPart]:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one content part (or a string)")
        return value

    def text(self) -> str:
        """The turn's text: ``content``, or its text parts joined by newlines."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")

    def images(self) -> list[Image]:
        """The turn's images, in order."""
        if isinstance(self.content, str):
            return []
        return [p.image_url for p in self.content if p.image_url is not None]


class RewardItem(_Strict):
    """One rollout to score.

    Give either ``prompt`` + ``response`` or ``messages`` (a chat whose last turn is the
    assistant's response). Images: a text-to-image rollout's generated image is its
    response (``response_images``, with or without a ``response`` text); a captioning or
    VQA rollout's input image is in ``prompt_images``; in ``messages`` images are content
    parts (a user turn's images are prompt images, the last assistant turn's are response
    images); ``reference_images`` are ground truth to compare an image with.
    ``reference`` is the ground truth (a gold answer, a pattern argument); numbers are
    accepted and carried as text. ``group`` ties together the
    rollouts of one prompt (GRPO group normalisation, in-group comparisons).
    """

    # The published schema says what the validators below enforce: `response` or
    # `messages` (a chat ending with the assistant's turn), and never both forms.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["response"], "properties": {"response": {"type": "string"}}},
                {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
                {
                    "required": ["response_images"],
                    "properties": {"response_images": {"type": "array", "minItems": 1}},
                },
            ],
            "not": {
                "anyOf": [
                    {
                        "required": ["messages", other],
                        "properties": {
                            "messages": {"type": "array"},
                            other: {"type": "array" if other.endswith("images") else "string"},
                        },
                    }
                    for other in ("response", "prompt", "response_images", "prompt_images")
                ]
            },
        },
    )

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    """The caller's id, unique within the request; the result carries it."""
    prompt: str | None = None
    """The prompt (with `response`; or give `messages`)."""
    response: str | None = None
    """The policy's response: the text being rewarded."""
    messages: list[Message] | None = Field(
        default=None,
        min_length=1,
        description="A chat whose last turn is the assistant's response (role `assistant`).",
    )
    reference: str | None = None
    """The ground truth: a gold answer, a reference text (numbers are carried as text)."""
    prompt_images: list[Image] | None = None
    """Images the prompt shows (captioning, VQA); with `prompt`/`response`."""
    response_images: list[Image] | None = None
    """The images the policy generated (text-to-image): the response being rewarded."""
    reference_images: list[Image] | None = None
    """Reference images (ground truth) to compare a response image with."""
    group: str | None = None
    """Rollouts of one prompt share a group (group normalisation, in-group comparisons)."""
    reference_rewards: list[float] | None = Field(
        default=None,
        max_length=MAX_REFERENCE_REWARDS,
        description="Reference rewards r_ref for centred transforms (sigmoid_centered, "
        "log_sigmoid_centered) whose reference source is `request`.",
    )
    metadata: dict[str, Any] | None = None
    """Free-form JSON for scorers that read it (a python scorer's `metadata`)."""

    @field_validator("reference", mode="before")
    @classmethod
    def _reference_as_text(cls, value: object) -> object:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, int | float):
            return repr(value) if isinstance(value, float) else str(value)
        return value

    @field_validator("prompt_images", "response_images", "reference_images")
    @classmethod
    def _no_images_is_none(cls, value: list[Image] | None) -> list[Image] | None:
        return value or None  # [] and absent mean the same (protobuf cannot tell them apart)

    @field_validator("reference_rewards")
    @classmethod
    def _finite_reference_rewards(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            if not value:
                raise ValueError("must not be empty when given")
            if not all(math.isfinite(v) for v in value):
                raise ValueError("must be finite numbers")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_as_json(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        data = json_data(value)
        assert isinstance(data, dict)
        return data

    @model_validator(mode="after")
    def _one_input_form(self) -> RewardItem:
        if self.messages is not None:
            flat = ("prompt", "response", "prompt_images", "response_images")
            if any(getattr(self, name) is not None for name in flat):
                raise ValueError(
                    "give either `messages` (images as content parts) or "
                    "`prompt`/`response`/`prompt_images`/`response_images`, not both"
                )
            if not self.messages or self.messages[-1].role != "assistant":
                raise ValueError("`messages` must end with the assistant's response")
        elif self.response is None and self.response_images is None:
            raise ValueError("`response` is required (or `response_images`, or `messages`)")
        return self

    def response_text(self) -> str:
        """The text being rewarded: ``response``, or the last assistant turn's text."""
        if self.messages is not None:
            return self.messages[-1].text()
        return self.response or ""

    def prompt_text(self) -> str:
        """The prompt: ``prompt``, or the last user turn's text before the response."""
        if self.messages is not None:
            for message in reversed(self.messages[:-1]):
                if message.role == "user":
                    return message.text()
            return ""
        return self.prompt or ""

    def prompt_image_list(self) -> list[Image]:
        """The prompt's images: ``prompt_images``, or those of every turn before the
        response, in order."""
        if self.messages is not None:
            return [image for message in self.messages[:-1] for image in message.images()]
        return list(self.prompt_images or ())

    def response_image_list(self) -> list[Image]:
        """The response's images: ``response_images``, or the last assistant turn's."""
        if self.messages is not None:
            return self.messages[-1].images()
        return list(self.response_images or ())


class RewardOptions(_Strict):
    return_components: bool = True
    """Return every named node's value in `components`."""
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    """This request's deadline, if shorter than the server's `request_timeout_s`."""
    group_reference_rewards: dict[str, list[float]] | None = Field(
        default=None,
        description="Reference rewards per group id, for centred transforms whose reference "
        f"source is `request` (at most {MAX_REFERENCE_REWARDS} per group); an item's own "
        "`reference_rewards` take precedence.",
    )
    group_size: int | None = Field(
        default=None, ge=1, le=MAX_GROUP_SIZE,
        description="Items per `group` when a group's items are sent over several requests "
        "(one rollout per request): the server holds them until the group is whole (or "
        "its group timeout passes), scores them together and answers each request with its "
        "own items. Default: the pipeline's `group_size`; only pipelines with group steps "
        "use it.",
    )  # fmt: skip

    @field_validator("group_reference_rewards")
    @classmethod
    def _finite_group_rewards(
        cls, value: dict[str, list[float]] | None
    ) -> dict[str, list[float]] | None:
        for group, rewards in (value or {}).items():
            if not rewards or len(rewards) > MAX_REFERENCE_REWARDS:
                raise ValueError(
                    f"group {group!r}: give 1 to {MAX_REFERENCE_REWARDS} reference rewards"
                )
            if not all(math.isfinite(v) for v in rewards):
                raise ValueError(f"group {group!r}: reference rewards must be finite numbers")
        return value


class RewardRequest(_Strict):
    pipeline: str = Field(default="default", min_length=1)
    """The pipeline to score with."""
    items: list[RewardItem] = Field(min_length=1)
    """The rollouts; one result each comes back, in this order."""
    options: RewardOptions = Field(default_factory=RewardOptions)
    """Request options."""

    @model_validator(mode="after")
    def _unique_ids(self) -> RewardRequest:
        counts = Counter(item.id for item in self.items)
        duplicated = sorted(item_id for item_id, n in counts.items() if n > 1)
        if duplicated:
            shown = ", ".join(repr(d) for d in duplicated[:10])
            more = f" (and {len(duplicated) - 10} more)" if len(duplicated) > 10 else ""
            raise ValueError(f"item ids must be unique within a request; duplicated: {shown}{more}")
        return self


class ItemError(BaseModel):
    """Why one item has no reward. The other items of the request are unaffected."""

    type: str
    message: str
    retryable: bool = Field(
        default=False,
        description="Sending the item again may give a verdict (a timeout, an overloaded "
        "verifier); false when the same failure would repeat.",
    )


class RewardResult(BaseModel):
    id: str
    outcome: Outcome = Field(
        default="scored",
        description="`scored`: `reward` is a verdict about the answer. `failed`: no verdict "
        "could be reached (see `error.retryable`). `invalid`: the item cannot be scored as "
        "sent. Only a scored item has a reward.",
    )
    reward: float | None
    components: dict[str, float | None] | None = None
    steps: list[float] | None = None
    cached: bool = False
    error: ItemError | None = None
    info: dict[str, str] | None = Field(
        default=None,
        description="Per-component notes that explain a value (e.g. a math check timed out).",
    )
    truncated: bool = Field(
        default=False,
        description="A model scorer cut this item's input to its max_length (the scorer's "
        "note in `info` says how much); only scorers configured to truncate do this.",
    )

    @model_validator(mode="before")
    @classmethod
    def _outcome_from_error(cls, data: Any) -> Any:
        # A server from before typed outcomes sends none: an error then means "failed".
        if isinstance(data, dict) and "outcome" not in data and data.get("error") is not None:
            return {**data, "outcome": "failed"}
        return data

    @model_validator(mode="after")
    def _outcome_agrees(self) -> RewardResult:
        if (self.outcome == "scored") != (self.error is None):
            raise ValueError(f"outcome {self.outcome!r} with error={self.error!r}")
        if self.outcome != "scored" and self.reward is not None:
            raise ValueError(f"a {self.outcome} item carries no reward")
        return self

    @property
    def retryable(self) -> bool:
        """A failed item that may succeed if sent again."""
        return self.outcome == "failed" and self.error is not None and self.error.retryable


class Usage(_Documented):
    items: int
    """Items in the request."""
    cache_hits: int
    """Scorer values served from the cache (one per scorer and item)."""
    errors: int
    """Items that got an error instead of a reward."""


class RewardResponse(_Documented):
    pipeline: str
    """The pipeline that scored the request."""
    pipeline_version: str
    """sha256 of the pipeline's tree and its scorers' fingerprints: changes exactly when
    rewards can."""
    results: list[RewardResult]
    """One per item, in request order."""
    usage: Usage
    """Counts for this request."""


class ErrorDetail(_Documented):
    type: str
    """The error kind: bad_request, unauthorized, not_found, payload_too_large,
    invalid_request, overloaded, not_ready, timeout, internal."""
    message: str
    """What went wrong and what to fix."""
    param: str | None = None
    """The field to fix (`items[3].response`), when one is to blame."""


class ErrorBody(BaseModel):
    """The body of every failed HTTP response."""

    error: ErrorDetail


class ServerLimits(_Documented):
    """What one request may hold (GET /v1/limits, gRPC GetLimits): clients split above it."""

    max_items_per_request: int
    """Most items in one request."""
    max_request_bytes: int
    """Largest request body in bytes."""
    max_text_chars: int
    """Longest prompt, response, reference or message."""
    request_timeout_s: float
    """The server's request deadline."""


# -- the admin API (live reloads) -------------------------------------------------------
Swap = Literal["beside", "in_place"]


class ScorerReloadRequest(_Strict):
    """POST /v1/admin/scorers/{name}/reload: load a scorer again, with these options
    changed (none: the same options, e.g. new weights written to the same directory)."""

    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options to change (`model`, `revision`, ...); the rest stay as they are.",
    )
    swap: Swap = Field(
        default="beside",
        description="beside: load the new version next to the old one, then switch (no "
        "request waits); in_place: unload the old one first (its pipelines answer 503 "
        "with Retry-After meanwhile), for models too large for two copies.",
    )


class ConfigApplyRequest(_Strict):
    """POST /v1/admin/config: a whole new config (the YAML file's content as an object),
    validated whole, then applied live; an invalid one changes nothing."""

    config: dict[str, Any]
    swap: Swap = "beside"


class ReloadResult(BaseModel):
    """What a reload or config apply changed, and the pipeline versions now served."""

    added: list[str]
    reloaded: list[str]
    removed: list[str]
    pipelines: dict[str, str] = Field(description="pipeline name -> version served now")
    fingerprints: dict[str, str] = Field(
        description="each added or reloaded scorer -> its new fingerprint"
    )
    duration_s: float


class ScorerStatus(BaseModel):
    name: str
    kind: str
    fingerprint: str = Field(description="the version served now (it enters cache keys)")
    state: Literal["ready", "reloading", "unavailable"]
    loaded_at: float = Field(description="unix time the serving version finished loading")
    memory_bytes: int | None = Field(
        default=None, description="memory the loaded scorer holds (a model's weights)"
    )
    pipelines: list[str]


class ScorerList(BaseModel):
    """GET /v1/admin/scorers."""

    scorers: list[ScorerStatus]
