"""Evaluate a pipeline tree over a batch of items.

Values flow as ``{item index: value}``; an item that fails anywhere (scorer error,
non-finite value, missing reference rewards) is recorded once in ``EvalState.errors`` and
drops out of every later computation, so the other items are unaffected. Gate branches
are evaluated only for the items whose condition holds.
"""

from __future__ import annotations

import asyncio
import math
import operator
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from referee.pipeline.nodes import (
    AffineTransform,
    ClipTransform,
    CombineNode,
    GateNode,
    GroupNormTransform,
    LogSigmoidCenteredTransform,
    Node,
    RunningZScoreTransform,
    ScorerNode,
    SigmoidCenteredTransform,
    Transform,
)
from referee.scorers.base import ScoreInput, ScoreResult

__all__ = ["EvalState", "FetchScores", "LeafScore", "PipelineEvaluator", "Values"]

Values = dict[int, float]


@dataclass(slots=True)
class LeafScore:
    result: ScoreResult
    cached: bool


FetchScores = Callable[[str, list[int]], Awaitable[dict[int, LeafScore]]]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass
class EvalState:
    """Everything one evaluation produces besides the final values."""

    items: Sequence[ScoreInput]
    reference_rewards: Sequence[list[float] | None]
    fetch: FetchScores
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    components: dict[int, dict[str, float | None]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    steps: dict[int, list[float]] = field(default_factory=dict)
    info: dict[int, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    all_cached: dict[int, bool] = field(default_factory=dict)
    truncated: set[int] = field(default_factory=set)
    cache_hits: int = 0

    def fail(self, index: int, error_type: str, message: str) -> None:
        self.errors.setdefault(index, (error_type, message))


@dataclass
class _Welford:
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _log_sigmoid(x: float) -> float:
    if x >= 0:
        return -math.log1p(math.exp(-x))
    return x - math.log1p(math.exp(x))


def _auto_name(node: Node, path: str) -> str:
    if isinstance(node, ScorerNode):
        if not node.transforms:
            return node.scorer
        return node.scorer + ":" + "+".join(t.type for t in node.transforms)
    return path


class PipelineEvaluator:
    """A compiled pipeline: stable component names and the running-statistics state."""

    def __init__(self, root: Node) -> None:
        self.root = root
        self.names: dict[int, str] = {}
        self._running: dict[tuple[int, int], _Welford] = {}
        self._assign_names(root, "reward")

    def _assign_names(self, node: Node, path: str) -> None:
        used = set(self.names.values())
        name = node.name or _auto_name(node, path)
        plain_leaf = isinstance(node, ScorerNode) and not node.transforms and node.name is None
        if name in used and not plain_leaf:  # the same bare scorer twice is one component
            suffix = 2
            while f"{name}#{suffix}" in used:
                suffix += 1
            name = f"{name}#{suffix}"
        self.names[id(node)] = name
        if isinstance(node, CombineNode):
            for i, child in enumerate(node.inputs):
                self._assign_names(child, f"{path}.{i}")
        elif isinstance(node, GateNode):
            self._assign_names(node.when.node, f"{path}.when")
            self._assign_names(node.then, f"{path}.then")

    async def evaluate(self, state: EvalState) -> Values:
        return await self._eval(self.root, list(range(len(state.items))), state)

    # -- nodes ------------------------------------------------------------------------
    async def _eval(self, node: Node, idx: list[int], state: EvalState) -> Values:
        if not idx:
            return {}
        name = self.names[id(node)]
        if isinstance(node, ScorerNode):
            values = await self._leaf(node, idx, state)
        elif isinstance(node, CombineNode):
            values = await self._combine(node, idx, state)
        else:
            values = await self._gate(node, idx, state)
        for position, transform in enumerate(node.transforms):
            values = self._transform(transform, (id(node), position), values, state)
        for i, value in list(values.items()):
            if not math.isfinite(value):
                state.fail(i, "non_finite", f"pipeline node {name!r} produced {value}")
                del values[i]
            else:
                state.components[i][name] = value
        return values

    async def _leaf(self, node: ScorerNode, idx: list[int], state: EvalState) -> Values:
        scores = await state.fetch(node.scorer_name, idx)
        values: Values = {}
        for i in idx:  # errors elsewhere in the tree are not consulted: results stay
            leaf = scores[i]  # independent of which branch happened to finish first
            result = leaf.result
            state.all_cached[i] = state.all_cached.get(i, True) and leaf.cached
            if result.error is not None:
                state.fail(i, result.error_type, f"scorer {node.scorer_name!r}: {result.error}")
                continue
            if result.reason:
                state.info[i][node.scorer_name] = result.reason
            if result.truncated:
                state.truncated.add(i)
            if result.steps is not None and i not in state.steps:
                state.steps[i] = list(result.steps)
            if node.aspect is None:
                value = result.value
            else:
                value = result.aspects.get(node.aspect)
                if value is None:
                    state.fail(
                        i,
                        "missing_aspect",
                        f"scorer {node.scorer_name!r} returned no aspect {node.aspect!r} "
                        f"(it returned: {', '.join(sorted(result.aspects)) or 'none'})",
                    )
                    continue
            if value is None or not math.isfinite(value):
                state.fail(
                    i, "non_finite", f"scorer {node.scorer!r} returned a non-finite value {value}"
                )
                continue
            values[i] = float(value)
            if node.transforms:  # the raw leaf value, before this node's transforms
                state.components[i][node.scorer] = float(value)
        return values

    async def _combine(self, node: CombineNode, idx: list[int], state: EvalState) -> Values:
        children = await _gather_or_cancel([self._eval(c, idx, state) for c in node.inputs])
        values: Values = {}
        for i in idx:
            if not all(i in child for child in children):
                continue  # already recorded as an error where it dropped out
            try:
                values[i] = _combine_values(node, [child[i] for child in children])
            except (OverflowError, ValueError) as exc:
                state.fail(i, "non_finite", f"pipeline node {node.type!r} overflowed: {exc}")
        return values

    async def _gate(self, node: GateNode, idx: list[int], state: EvalState) -> Values:
        condition = await self._eval(node.when.node, idx, state)
        test = _OPS[node.when.op]
        passing = [i for i in idx if i in condition and test(condition[i], node.when.value)]
        branch = await self._eval(node.then, passing, state)
        values: Values = {}
        passing_set = set(passing)
        for i in idx:
            if i not in condition:
                continue
            if i in passing_set:
                if i in branch:
                    values[i] = branch[i]
            else:
                values[i] = node.otherwise
        return values

    # -- transforms -------------------------------------------------------------------
    def _transform(
        self, t: Transform, key: tuple[int, int], values: Values, state: EvalState
    ) -> Values:
        if isinstance(t, ClipTransform):
            lo = -math.inf if t.min is None else t.min
            hi = math.inf if t.max is None else t.max
            return {i: min(max(v, lo), hi) for i, v in values.items()}
        if isinstance(t, AffineTransform):
            return {i: v * t.scale + t.shift for i, v in values.items()}
        if isinstance(t, SigmoidCenteredTransform | LogSigmoidCenteredTransform):
            fn = _sigmoid if isinstance(t, SigmoidCenteredTransform) else _log_sigmoid
            out: Values = {}
            for i, v in values.items():
                refs = t.reference if isinstance(t.reference, list) else state.reference_rewards[i]
                if not refs:
                    state.fail(
                        i,
                        "missing_field",
                        f"transform {t.type} needs reference rewards: give the item "
                        "`reference_rewards` or `options.group_reference_rewards` for its group",
                    )
                    continue
                try:
                    out[i] = sum(fn(t.k * (v - r)) for r in refs) / len(refs)
                except (OverflowError, ValueError):
                    state.fail(i, "non_finite", f"transform {t.type} overflowed for {v}")
            return out
        if isinstance(t, GroupNormTransform):
            return _group_norm(t, values, state)
        if isinstance(t, RunningZScoreTransform):
            current = self._running.get(key, _Welford())
            stats = _Welford(current.count, current.mean, current.m2)
            for i in sorted(values):
                stats.add(values[i])
            if not (math.isfinite(stats.mean) and math.isfinite(stats.m2)):
                for i in values:  # keep the running state usable for later requests
                    state.fail(i, "non_finite", "running_zscore statistics would overflow")
                return {}
            self._running[key] = stats
            mean, std = stats.mean, stats.std
            return {i: (v - mean) / (std + t.eps) for i, v in values.items()}
        raise TypeError(f"unknown transform {t!r}")


async def _gather_or_cancel(coros: list[Coroutine[Any, Any, Values]]) -> list[Values]:
    """Like gather, but a failure (429, timeout) cancels the sibling branches too."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _combine_values(node: CombineNode, members: list[float]) -> float:
    n = len(members)
    if node.type == "weighted_sum":
        assert node.weights is not None
        return sum(w * m for w, m in zip(node.weights, members, strict=True))
    if node.type == "mean":
        return sum(members) / n
    if node.type == "min":
        return min(members)
    if node.type == "max":
        return max(members)
    if node.type == "product":
        return math.prod(members)
    # uwo: uncertainty-weighted optimisation, mean - lam * population variance
    mean = sum(members) / n
    variance = sum((m - mean) * (m - mean) for m in members) / n
    return mean - node.lam * variance


def _group_norm(t: GroupNormTransform, values: Values, state: EvalState) -> Values:
    items = state.items
    groups: dict[str, list[int]] = defaultdict(list)
    out: Values = {}
    for i in values:
        group = items[i].group
        if group is None:
            out[i] = 0.0  # an ungrouped item is a group of one: no advantage
        else:
            groups[group].append(i)
    for members in groups.values():
        xs = [values[i] for i in members]
        n = len(xs)
        mean = sum(xs) / n
        denom = n - t.ddof
        std = math.sqrt(sum((x - mean) * (x - mean) for x in xs) / denom) if denom > 0 else 0.0
        if not (math.isfinite(mean) and math.isfinite(std)):
            for i in members:  # the group's statistics overflowed: no honest advantage
                state.fail(i, "non_finite", f"group_norm statistics of group {items[i].group!r} "
                           "overflowed")  # fmt: skip
            continue
        for i in members:
            centred = values[i] - mean
            out[i] = centred / (std + t.eps) if t.scale else centred
    return out
