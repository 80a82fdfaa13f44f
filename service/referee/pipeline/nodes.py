"""The pipeline expression tree as configuration: nodes and transforms (pydantic models).

A node is a scorer leaf (``"math"`` or ``"rm.helpfulness"`` for an aspect), a combinator
(``weighted_sum``, ``mean``, ``min``, ``max``, ``product``, ``uwo``) or a ``gate``. Every node
may carry ``transforms`` applied to its value in order, and a ``name`` under which its
value is reported in ``components``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

__all__ = [
    "SCORER_NAME_RE",
    "AffineTransform",
    "ClipTransform",
    "CombineNode",
    "Condition",
    "GateNode",
    "GroupNormTransform",
    "LogSigmoidCenteredTransform",
    "Node",
    "RunningZScoreTransform",
    "ScorerNode",
    "SigmoidCenteredTransform",
    "Transform",
    "has_group_steps",
]

SCORER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_REF_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)?$")

Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- transforms ---------------------------------------------------------------------------
class ClipTransform(_Model):
    type: Literal["clip"] = Field(description="Clamp the value to [min, max].")
    min: Finite | None = Field(default=None, description="Lower bound; null: none.")
    max: Finite | None = Field(default=None, description="Upper bound; null: none.")

    @model_validator(mode="after")
    def _ordered(self) -> ClipTransform:
        if self.min is None and self.max is None:
            raise ValueError("clip needs `min`, `max` or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"clip min ({self.min}) must not exceed max ({self.max})")
        return self


class AffineTransform(_Model):
    """value * scale + shift."""

    type: Literal["affine"] = Field(description="value * scale + shift.")
    scale: Finite = Field(default=1.0, description="Multiplies the value.")
    shift: Finite = Field(default=0.0, description="Added after scaling.")


def _reference_values(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)]
    return value


ReferenceSource = Annotated[
    Literal["request"] | list[Finite],
    BeforeValidator(_reference_values),
    Field(
        description="Reference rewards r_ref: `request` (the item's `reference_rewards`, "
        "else the request's `group_reference_rewards` for its group) or fixed values."
    ),
]


class SigmoidCenteredTransform(_Model):
    """Preference-as-reward (PAR): mean over r_ref of sigmoid(k * (r - r_ref))."""

    type: Literal["sigmoid_centered"] = Field(
        description="Preference-as-reward: mean over r_ref of sigmoid(k * (value - r_ref))."
    )
    reference: ReferenceSource
    k: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=1.0, description="Slope of the sigmoid."
    )

    @model_validator(mode="after")
    def _non_empty(self) -> SigmoidCenteredTransform:
        if isinstance(self.reference, list) and not self.reference:
            raise ValueError("reference must list at least one value")
        return self


class LogSigmoidCenteredTransform(_Model):
    """Mean over r_ref of log sigmoid(k * (r - r_ref))."""

    type: Literal["log_sigmoid_centered"] = Field(
        description="Mean over r_ref of log sigmoid(k * (value - r_ref))."
    )
    reference: ReferenceSource
    k: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=1.0, description="Slope of the sigmoid."
    )

    @model_validator(mode="after")
    def _non_empty(self) -> LogSigmoidCenteredTransform:
        if isinstance(self.reference, list) and not self.reference:
            raise ValueError("reference must list at least one value")
        return self


class GroupNormTransform(_Model):
    """(r - mean_g) / (std_g + eps) over the items sharing a ``group`` (GRPO advantages).

    ``ddof=1`` (sample std, as TRL/verl compute it) or 0; ``scale: false`` subtracts the
    mean only (Dr. GRPO). Items without a group, and groups of one, get 0.
    """

    type: Literal["group_norm"] = Field(
        description="(value - mean_g) / (std_g + eps) over the items of the same `group`."
    )
    eps: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=1e-6, description="Added to the std, so a group of equal values gives 0."
    )
    ddof: Literal[0, 1] = Field(
        default=1, description="1: sample std (as TRL and verl compute it); 0: population std."
    )
    scale: bool = Field(default=True, description="false: subtract the group mean only (Dr. GRPO).")


class RunningZScoreTransform(_Model):
    """(r - mean) / (std + eps) with mean/std over every value this node has seen
    in this process (Welford), the current batch included."""

    type: Literal["running_zscore"] = Field(
        description="(value - mean) / (std + eps) over every value this node has seen."
    )
    eps: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=1e-6, description="Added to the std."
    )


Transform = Annotated[
    ClipTransform
    | AffineTransform
    | SigmoidCenteredTransform
    | LogSigmoidCenteredTransform
    | GroupNormTransform
    | RunningZScoreTransform,
    Field(discriminator="type"),
]


# -- nodes ----------------------------------------------------------------------------------
class _NodeBase(_Model):
    name: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="The node's key in `components`; unnamed: the scorer's name for a leaf, "
        "`reward` for the root, else a name from the node's position.",
    )  # fmt: skip
    transforms: list[Transform] = Field(
        default_factory=list, description="Transforms applied to the node's value, in order."
    )


class ScorerNode(_NodeBase):
    """A leaf: a scorer's value, or one of its aspects (``scorer.aspect``)."""

    type: Literal["scorer"] = Field(
        description="Written as a plain string (`math`) or as {type: scorer, scorer: math}."
    )
    scorer: str = Field(description="A scorer name, or `name.aspect` for one of its aspects.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if isinstance(value, str):
            return {"type": "scorer", "scorer": value}
        return value

    @model_validator(mode="after")
    def _valid_ref(self) -> ScorerNode:
        if not _REF_RE.match(self.scorer):
            raise ValueError(f"{self.scorer!r} is not a scorer reference (`name` or `name.aspect`)")
        return self

    @property
    def scorer_name(self) -> str:
        return self.scorer.split(".", 1)[0]

    @property
    def aspect(self) -> str | None:
        parts = self.scorer.split(".", 1)
        return parts[1] if len(parts) == 2 else None


class CombineNode(_NodeBase):
    """weighted_sum (needs ``weights``), mean, min (worst case), max, product, and
    uwo: mean - lam * variance (population) across members."""

    type: Literal["weighted_sum", "mean", "min", "max", "product", "uwo"] = Field(
        description="How the inputs combine: weighted sum, mean, min (worst-case ensemble), "
        "max, product, or uwo (mean - lam * variance)."
    )
    inputs: list[Node] = Field(min_length=1, description="The nodes to combine.")
    weights: list[Finite] | None = Field(
        default=None, description="weighted_sum only: one finite weight per input."
    )
    lam: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=1.0, description="uwo only: how much the inputs' variance is subtracted."
    )

    @model_validator(mode="after")
    def _weights_match(self) -> CombineNode:
        if self.type == "weighted_sum":
            if self.weights is None:
                raise ValueError("weighted_sum needs `weights`, one per input")
            if len(self.weights) != len(self.inputs):
                raise ValueError(
                    f"weighted_sum has {len(self.inputs)} inputs but {len(self.weights)} weights"
                )
        elif self.weights is not None:
            raise ValueError(f"`weights` is only for weighted_sum, not {self.type}")
        return self


class Condition(_Model):
    node: Node = Field(description="The node whose value is compared.")
    op: Literal[">", ">=", "<", "<=", "==", "!="] = Field(
        default=">=", description="The comparison."
    )
    value: Finite = Field(description="The threshold.")


class GateNode(_NodeBase):
    """``then`` counts only for items where ``when`` holds; the others get ``otherwise``.
    The ``then`` branch is not computed for items that fail the condition."""

    type: Literal["gate"] = Field(description="Use `then` only where `when` holds.")
    when: Condition = Field(description="The condition: {node, op, value}.")
    then: Node = Field(description="The value where the condition holds.")
    otherwise: Finite = Field(
        default=0.0, description="The value elsewhere (`then` is not computed for those items)."
    )


_COMBINE_TYPES = frozenset({"weighted_sum", "mean", "min", "max", "product", "uwo"})


def _node_tag(value: object) -> str | None:
    """Pick the node class from `type` (a plain string is a scorer leaf)."""
    if isinstance(value, str):
        return "scorer"
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind in _COMBINE_TYPES:
        return "combine"
    if kind in ("scorer", "gate"):
        return str(kind)
    return None


Node = Annotated[
    Annotated[ScorerNode, Tag("scorer")]
    | Annotated[CombineNode, Tag("combine")]
    | Annotated[GateNode, Tag("gate")],
    Discriminator(
        _node_tag,
        custom_error_type="invalid_node",
        custom_error_message="a node is a scorer name or a mapping whose `type` is one of: "
        "scorer, gate, " + ", ".join(sorted(_COMBINE_TYPES)),
    ),
]


def has_group_steps(node: Node) -> bool:
    """Whether a tree normalises within groups anywhere (its values need whole groups)."""
    if any(isinstance(t, GroupNormTransform) for t in node.transforms):
        return True
    if isinstance(node, CombineNode):
        return any(has_group_steps(child) for child in node.inputs)
    if isinstance(node, GateNode):
        return has_group_steps(node.when.node) or has_group_steps(node.then)
    return False


CombineNode.model_rebuild()
Condition.model_rebuild()
GateNode.model_rebuild()
