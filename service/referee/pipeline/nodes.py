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
    type: Literal["clip"]
    min: Finite | None = None
    max: Finite | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ClipTransform:
        if self.min is None and self.max is None:
            raise ValueError("clip needs `min`, `max` or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"clip min ({self.min}) must not exceed max ({self.max})")
        return self


class AffineTransform(_Model):
    """value * scale + shift."""

    type: Literal["affine"]
    scale: Finite = 1.0
    shift: Finite = 0.0


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

    type: Literal["sigmoid_centered"]
    reference: ReferenceSource
    k: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0

    @model_validator(mode="after")
    def _non_empty(self) -> SigmoidCenteredTransform:
        if isinstance(self.reference, list) and not self.reference:
            raise ValueError("reference must list at least one value")
        return self


class LogSigmoidCenteredTransform(_Model):
    """Mean over r_ref of log sigmoid(k * (r - r_ref))."""

    type: Literal["log_sigmoid_centered"]
    reference: ReferenceSource
    k: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0

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

    type: Literal["group_norm"]
    eps: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-6
    ddof: Literal[0, 1] = 1
    scale: bool = True


class RunningZScoreTransform(_Model):
    """(r - mean) / (std + eps) with mean/std over every value this node has seen
    in this process (Welford), the current batch included."""

    type: Literal["running_zscore"]
    eps: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-6


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
    name: str | None = Field(default=None, min_length=1, max_length=128)
    transforms: list[Transform] = Field(default_factory=list)


class ScorerNode(_NodeBase):
    """A leaf: a scorer's value, or one of its aspects (``scorer.aspect``)."""

    type: Literal["scorer"]
    scorer: str

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

    type: Literal["weighted_sum", "mean", "min", "max", "product", "uwo"]
    inputs: list[Node] = Field(min_length=1)
    weights: list[Finite] | None = None
    lam: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0

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
    node: Node
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">="
    value: Finite


class GateNode(_NodeBase):
    """``then`` counts only for items where ``when`` holds; the others get ``otherwise``.
    The ``then`` branch is not computed for items that fail the condition."""

    type: Literal["gate"]
    when: Condition
    then: Node
    otherwise: Finite = 0.0


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
