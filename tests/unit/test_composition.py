"""Composition arithmetic against hand-computed values.

The scorer layer is fed from a table of fixed per-item scores (``fetch`` below): these tests
prove the arithmetic of the tree, not the scorers, which have their own tests.
"""

from __future__ import annotations

import math

import pytest
from pydantic import TypeAdapter, ValidationError

from referee.pipeline import EvalState, LeafScore, PipelineEvaluator
from referee.pipeline.nodes import Node
from referee.scorers.base import ScoreInput, ScoreResult

NODE = TypeAdapter(Node)


def item(i: int, group: str | None = None) -> ScoreInput:
    return ScoreInput(
        id=f"i{i}", prompt="", response="", reference=None, group=group, messages=None,
        metadata=None,
    )  # fmt: skip


class Table:
    """Per-scorer fixed values; records which items each scorer was asked for."""

    def __init__(self, values: dict[str, list[float | dict[str, float] | None]]) -> None:
        self.values = values
        self.asked: dict[str, list[int]] = {}

    async def __call__(self, scorer: str, idx: list[int]) -> dict[int, LeafScore]:
        self.asked.setdefault(scorer, []).extend(idx)
        out = {}
        for i in idx:
            v = self.values[scorer][i]
            if isinstance(v, dict):
                result = ScoreResult(value=v.get("_"), aspects={k: x for k, x in v.items()})
            elif v is None:
                result = ScoreResult.failed("boom")
            else:
                result = ScoreResult(value=v)
            out[i] = LeafScore(result, cached=False)
        return out


async def run(tree: object, values: dict, groups: list[str | None] | None = None,
              refs: list[list[float] | None] | None = None,
              evaluator: PipelineEvaluator | None = None):  # fmt: skip
    n = len(next(iter(values.values())))
    groups = groups or [None] * n
    table = Table(values)
    evaluator = evaluator or PipelineEvaluator(NODE.validate_python(tree))
    state = EvalState(
        items=[item(i, groups[i]) for i in range(n)],
        reference_rewards=refs or [None] * n,
        fetch=table,
    )
    out = await evaluator.evaluate(state)
    return out, state, table


async def test_weighted_sum_mean_min_max_product() -> None:
    vals = {"a": [1.0, -2.0], "b": [3.0, 0.5]}
    cases = {
        "weighted_sum": ([0.5 * 1 + 2 * 3, 0.5 * -2 + 2 * 0.5], {"weights": [0.5, 2.0]}),
        "mean": ([2.0, -0.75], {}),
        "min": ([1.0, -2.0], {}),
        "max": ([3.0, 0.5], {}),
        "product": ([3.0, -1.0], {}),
    }
    for kind, (expected, extra) in cases.items():
        out, _, _ = await run({"type": kind, "inputs": ["a", "b"], **extra}, vals)
        assert [out[0], out[1]] == pytest.approx(expected), kind


async def test_uwo_is_mean_minus_lambda_population_variance() -> None:
    vals = {"a": [1.0], "b": [2.0], "c": [6.0]}
    out, _, _ = await run({"type": "uwo", "lam": 0.5, "inputs": ["a", "b", "c"]}, vals)
    mean = 3.0
    var = ((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3  # 14/3
    assert out[0] == pytest.approx(mean - 0.5 * var)


async def test_gate_uses_branch_only_where_condition_holds_and_skips_the_rest() -> None:
    vals = {"fmt": [1.0, 0.0, 1.0], "rm": [0.7, 0.9, -0.2]}
    tree = {"type": "gate", "when": {"node": "fmt", "op": ">=", "value": 1}, "then": "rm",
            "otherwise": -1.0}  # fmt: skip
    out, state, table = await run(tree, vals)
    assert out == {0: 0.7, 1: -1.0, 2: -0.2}
    assert sorted(table.asked["rm"]) == [0, 2]  # the gated-off item never reached `rm`
    assert "rm" not in state.components[1]


@pytest.mark.parametrize(
    ("op", "expected"),
    [(">", [0, 0, 5]), (">=", [0, 5, 5]), ("<", [5, 0, 0]), ("<=", [5, 5, 0]),
     ("==", [0, 5, 0]), ("!=", [5, 0, 5])],
)  # fmt: skip
async def test_gate_operators(op: str, expected: list[float]) -> None:
    vals = {"c": [0.0, 1.0, 2.0], "x": [5.0, 5.0, 5.0]}
    tree = {"type": "gate", "when": {"node": "c", "op": op, "value": 1}, "then": "x"}
    out, _, _ = await run(tree, vals)
    assert [out[i] for i in range(3)] == expected


async def test_clip_and_affine_in_order() -> None:
    vals = {"a": [-3.0, 0.2, 9.0]}
    tree = {
        "type": "scorer",
        "scorer": "a",
        "transforms": [
            {"type": "clip", "min": -1, "max": 1},
            {"type": "affine", "scale": 2, "shift": 0.5},
        ],
    }
    out, state, _ = await run(tree, vals)
    assert [out[i] for i in range(3)] == pytest.approx([-1.5, 0.9, 2.5])
    assert state.components[0] == {"a": -3.0, "a:clip+affine": -1.5}


async def test_sigmoid_centered_averages_over_fixed_references() -> None:
    vals = {"rm": [1.0, -0.5]}
    tree = {"type": "scorer", "scorer": "rm",
            "transforms": [{"type": "sigmoid_centered", "reference": [0.0, 0.5], "k": 3.0}]}  # fmt: skip
    out, _, _ = await run(tree, vals)

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    assert out[0] == pytest.approx((sig(3 * 1.0) + sig(3 * 0.5)) / 2)  # (0.952574 + 0.817574) / 2
    assert out[1] == pytest.approx((sig(3 * -0.5) + sig(3 * -1.0)) / 2)  # 0.1073...
    assert out[0] == pytest.approx(0.885074, abs=1e-6)


async def test_log_sigmoid_centered_from_request_and_stable_far_out() -> None:
    vals = {"rm": [0.5, -2000.0, 3.0]}
    tree = {"type": "scorer", "scorer": "rm",
            "transforms": [{"type": "log_sigmoid_centered", "reference": "request"}]}  # fmt: skip
    out, state, _ = await run(tree, vals, refs=[[0.0], [0.0], None])
    assert out[0] == pytest.approx(math.log(1 / (1 + math.exp(-0.5))))
    assert out[1] == pytest.approx(-2000.0)  # log sigmoid(-2000) ~ -2000, finite, not -inf
    assert 2 not in out
    assert state.errors[2][0] == "missing_field"


async def test_group_norm_matches_grpo_with_sample_std() -> None:
    vals = {"r": [1.0, 0.0, 0.0, 1.0, 5.0, 7.0]}
    groups = ["g1", "g1", "g1", "g1", "g2", None]
    tree = {"type": "scorer", "scorer": "r", "transforms": [{"type": "group_norm", "eps": 1e-6}]}
    out, _, _ = await run(tree, vals, groups=groups)
    std = math.sqrt(((0.5**2) * 4) / 3)  # sample std of [1, 0, 0, 1]
    assert [out[i] for i in range(4)] == pytest.approx(
        [0.5 / (std + 1e-6), -0.5 / (std + 1e-6), -0.5 / (std + 1e-6), 0.5 / (std + 1e-6)]
    )
    assert out[4] == 0.0  # single-item group
    assert out[5] == 0.0  # no group


async def test_group_norm_population_std_and_mean_only() -> None:
    vals = {"r": [2.0, 4.0]}
    tree = {"type": "scorer", "scorer": "r",
            "transforms": [{"type": "group_norm", "ddof": 0, "eps": 0.5}]}  # fmt: skip
    out, _, _ = await run(tree, vals, groups=["g", "g"])
    assert [out[0], out[1]] == pytest.approx([-1 / 1.5, 1 / 1.5])
    tree["transforms"] = [{"type": "group_norm", "scale": False}]
    out, _, _ = await run(tree, vals, groups=["g", "g"])
    assert [out[0], out[1]] == pytest.approx([-1.0, 1.0])


async def test_group_norm_identical_rewards_give_zero_not_nan() -> None:
    out, _, _ = await run(
        {"type": "scorer", "scorer": "r", "transforms": [{"type": "group_norm"}]},
        {"r": [1.0, 1.0, 1.0]},
        groups=["g", "g", "g"],
    )
    assert list(out.values()) == [0.0, 0.0, 0.0]


async def test_group_norm_over_empty_group_after_errors() -> None:
    # Every member of group g errored: the group is empty, the others are unaffected.
    vals = {"r": [None, None, 3.0, 5.0]}
    tree = {"type": "scorer", "scorer": "r", "transforms": [{"type": "group_norm", "ddof": 0}]}
    out, state, _ = await run(tree, vals, groups=["g", "g", "h", "h"])
    assert set(state.errors) == {0, 1}
    assert [out[2], out[3]] == pytest.approx([-1.0 / (1 + 1e-6), 1.0 / (1 + 1e-6)])


async def test_group_norm_excludes_errored_member_from_stats() -> None:
    vals = {"r": [1.0, None, 3.0]}
    tree = {"type": "scorer", "scorer": "r", "transforms": [{"type": "group_norm", "ddof": 0}]}
    out, state, _ = await run(tree, vals, groups=["g", "g", "g"])
    assert 1 in state.errors
    assert [out[0], out[2]] == pytest.approx([-1 / (1 + 1e-6), 1 / (1 + 1e-6)])


async def test_running_zscore_accumulates_across_batches() -> None:
    tree = {
        "type": "scorer",
        "scorer": "r",
        "transforms": [{"type": "running_zscore", "eps": 1e-12}],
    }
    evaluator = PipelineEvaluator(NODE.validate_python(tree))
    out1, _, _ = await run(tree, {"r": [1.0]}, evaluator=evaluator)
    assert out1[0] == 0.0  # one observation: mean is itself, std 0
    out2, _, _ = await run(tree, {"r": [2.0, 3.0]}, evaluator=evaluator)
    # seen 1, 2, 3: mean 2, sample std 1
    assert [out2[0], out2[1]] == pytest.approx([0.0, 1.0])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_non_finite_scorer_value_is_a_per_item_error(bad: float) -> None:
    vals = {"a": [1.0, bad, 2.0], "b": [1.0, 1.0, 1.0]}
    out, state, _ = await run({"type": "mean", "inputs": ["a", "b"]}, vals)
    assert out == {0: 1.0, 2: 1.5}
    assert state.errors[1][0] == "non_finite"


async def test_overflow_inside_the_tree_is_a_per_item_error() -> None:
    vals = {"a": [1e200, 2.0], "b": [1e200, 3.0]}
    out, state, _ = await run({"type": "product", "inputs": ["a", "b"]}, vals)
    assert out == {1: 6.0}
    assert "non-finite" in state.errors[0][1] or "inf" in state.errors[0][1]


async def test_aspects_are_addressable_and_missing_aspect_errors() -> None:
    vals = {"rm": [{"_": 0.1, "helpful": 0.8}, {"_": 0.2}]}
    out, state, _ = await run("rm.helpful", vals)
    assert out == {0: 0.8}
    assert state.errors[1][0] == "missing_aspect"


async def test_every_node_value_is_reported_in_components() -> None:
    vals = {"fmt": [1.0], "math": [1.0], "len": [-0.25]}
    tree = {
        "type": "weighted_sum", "weights": [1.0, 2.0],
        "inputs": [
            {"type": "gate", "name": "gated", "when": {"node": "fmt", "value": 1}, "then": "math"},
            {"type": "scorer", "scorer": "len", "transforms": [{"type": "clip", "min": -0.1}]},
        ],
    }  # fmt: skip
    out, state, _ = await run(tree, vals)
    assert out[0] == pytest.approx(1.0 + 2 * -0.1)
    assert state.components[0] == pytest.approx(
        {"fmt": 1.0, "math": 1.0, "gated": 1.0, "len": -0.25, "len:clip": -0.1, "reward": 0.8}
    )


def test_bad_trees_are_rejected_with_a_reason() -> None:
    bad = [
        {"type": "weighted_sum", "inputs": ["a", "b"], "weights": [1.0]},
        {"type": "weighted_sum", "inputs": ["a"]},
        {"type": "mean", "inputs": []},
        {"type": "mean", "inputs": ["a"], "weights": [1.0]},
        {"type": "uwo", "inputs": ["a"], "lam": -1},
        {"type": "scorer", "scorer": "a", "transforms": [{"type": "clip"}]},
        {"type": "scorer", "scorer": "a", "transforms": [{"type": "sigmoid_centered", "reference": []}]},
        {"type": "teleport", "inputs": ["a"]},
        {"type": "scorer", "scorer": "a.b.c"},
    ]  # fmt: skip
    for tree in bad:
        with pytest.raises(ValidationError):
            NODE.validate_python(tree)
