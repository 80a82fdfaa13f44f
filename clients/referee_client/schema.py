"""The wire schema: the one definition of what crosses the network.

The server imports these models; the gRPC ``.proto`` mirrors them field for field.
Keep this module free of server dependencies: a trainer installs only pydantic and httpx.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from referee_client._json import json_data

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "ItemError",
    "Message",
    "RewardItem",
    "RewardOptions",
    "RewardRequest",
    "RewardResponse",
    "RewardResult",
    "ServerLimits",
    "Usage",
]

MAX_ID_LENGTH = 256
MAX_REFERENCE_REWARDS = 1024
MAX_GROUP_SIZE = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Strict):
    """One chat turn. ``content`` is plain text."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class RewardItem(_Strict):
    """One rollout to score.

    Give either ``prompt`` + ``response`` or ``messages`` (a chat whose last turn is the
    assistant's response). ``reference`` is the ground truth (a gold answer, a pattern
    argument); numbers are accepted and carried as text. ``group`` ties together the
    rollouts of one prompt (GRPO group normalisation, in-group comparisons).
    """

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    prompt: str | None = None
    response: str | None = None
    messages: list[Message] | None = None
    reference: str | None = None
    group: str | None = None
    reference_rewards: list[float] | None = Field(
        default=None,
        max_length=MAX_REFERENCE_REWARDS,
        description="Reference rewards r_ref for centred transforms (sigmoid_centered, "
        "log_sigmoid_centered) whose reference source is `request`.",
    )
    metadata: dict[str, Any] | None = None

    @field_validator("reference", mode="before")
    @classmethod
    def _reference_as_text(cls, value: object) -> object:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, int | float):
            return repr(value) if isinstance(value, float) else str(value)
        return value

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
            if self.response is not None or self.prompt is not None:
                raise ValueError("give either `messages` or `prompt`/`response`, not both")
            if not self.messages or self.messages[-1].role != "assistant":
                raise ValueError("`messages` must end with the assistant's response")
        elif self.response is None:
            raise ValueError("`response` is required (or give `messages`)")
        return self

    def response_text(self) -> str:
        """The text being rewarded: ``response``, or the last assistant turn."""
        if self.messages is not None:
            return self.messages[-1].content
        return self.response or ""

    def prompt_text(self) -> str:
        """The prompt: ``prompt``, or the last user turn before the response."""
        if self.messages is not None:
            for message in reversed(self.messages[:-1]):
                if message.role == "user":
                    return message.content
            return ""
        return self.prompt or ""


class RewardOptions(_Strict):
    return_components: bool = True
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
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
    items: list[RewardItem] = Field(min_length=1)
    options: RewardOptions = Field(default_factory=RewardOptions)

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


class RewardResult(BaseModel):
    id: str
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


class Usage(BaseModel):
    items: int
    cache_hits: int
    errors: int


class RewardResponse(BaseModel):
    pipeline: str
    pipeline_version: str
    results: list[RewardResult]
    usage: Usage


class ErrorDetail(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorBody(BaseModel):
    """The body of every failed HTTP response."""

    error: ErrorDetail


class ServerLimits(BaseModel):
    """What one request may hold (GET /v1/limits, gRPC GetLimits): clients split above it."""

    max_items_per_request: int
    max_request_bytes: int
    max_text_chars: int
    request_timeout_s: float
