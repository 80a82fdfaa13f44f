"""Which item a judge's verdict credits, in every presentation order. The judge here is
a STAND-IN for a model (tests/e2e/marker_judge_server.py, a real OpenAI-compatible
server process): its preference is fixed by a "(quality N)" marker in each response, so
the right reward of every item is known. A real model's preference cannot be fixed, and
"win rates sum to one" holds whichever item a verdict credits; these tests would fail if
the scorer credited response A's win to B, in either order, or read a ranking backwards."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest

from referee.engine import with_peers
from referee.scorers import scorer_class
from referee.scorers.base import ScoreInput
from tests.e2e.marker_judge_server import quality, serving
from tests.support import score_input

Q = "Which answer is best?"


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    with serving() as url:
        yield url


async def judged(url: str, items: list[ScoreInput], model: str, **options: Any) -> list[Any]:
    """The judge's results for ``items``, each given its group's other responses."""
    items = with_peers(items)
    cls = scorer_class("judge")
    scorer = cls(
        "judge",
        cls.Options.model_validate(
            {"model": model, "backend": "openai", "endpoint": {"base_url": f"{url}/v1"},
             "guard": {"enabled": False}, **options}
        ),
    )  # fmt: skip
    await scorer.setup()
    try:
        results = await scorer.score_batch(items)
    finally:
        await scorer.close()
    assert [r.error for r in results] == [None] * len(items)
    return results


def group(name: str, qualities: list[int]) -> list[ScoreInput]:
    """One response per quality; the texts sort in the order given (listwise shows a
    group sorted by text), so each list of qualities is its own presentation order."""
    return [
        score_input(f"{chr(ord('a') + k)}: my answer (quality {q})", id=f"{name}-{k}",
                    prompt=Q, group=name)
        for k, q in enumerate(qualities)
    ]  # fmt: skip


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# The stand-in's P(the better one wins), by who it is shown as: consistent, or
# deciding only when the better response is shown as A (or B), 0.5 otherwise.
JUDGES = {
    "stand-in": (lambda gap: sigmoid(gap), lambda gap: sigmoid(gap)),
    "stand-in-decides-when-better-is-a": (lambda gap: sigmoid(gap), lambda gap: 0.5),
    "stand-in-decides-when-better-is-b": (lambda gap: 0.5, lambda gap: sigmoid(gap)),
}


@pytest.mark.parametrize("model", list(JUDGES))
async def test_pairwise_logprob_verdicts_credit_the_preferred_item_in_both_orders(
    stand_in: str, model: str
) -> None:
    as_a, as_b = JUDGES[model]

    def p_win(q: int, other: int) -> float:
        """This item's chance to win against `other`, shown as A, and shown as B."""
        gap = abs(q - other)
        if q > other:
            return as_a(gap), as_b(gap)
        return 1.0 - as_b(gap), 1.0 - as_a(gap)  # the other, better one, is B then A

    items = with_peers([*group("up", [1, 2, 4]), *group("down", [4, 2, 1])])
    results = await judged(stand_in, items, model, template="pairwise", group_mode="pairwise")
    for item, result in zip(items, results, strict=True):
        q = quality(item.response)
        others = [quality(p) for p in item.peers or ()]
        wins = [sum(p_win(q, o)) / 2 for o in others]
        assert result.value == pytest.approx(sum(wins) / len(wins), abs=1e-9), item.id
        assert result.aspects["comparisons"] == len(others)
    best = {r.value for i, r in zip(items, results, strict=True) if quality(i.response) == 4}
    assert min(best) > 0.5  # the best response wins more than half its comparisons


async def test_pairwise_parsed_verdicts_credit_the_preferred_item(stand_in: str) -> None:
    items = group("g", [3, 1, 2])
    results = await judged(stand_in, items, "stand-in", template="pairwise",
                           group_mode="pairwise", mode="parse")  # fmt: skip
    # "Winner: X" for the better one in both orders: it wins every comparison
    assert [r.value for r in results] == [1.0, 0.0, 0.5]
    assert all(r.aspects["position_consistency"] == 1.0 for r in results)


async def test_listwise_rankings_credit_each_item_its_place_in_every_presentation_order(
    stand_in: str,
) -> None:
    orders = list(itertools.permutations([1, 2, 3]))  # the cyclic ones catch an inverse
    items = [it for n, order in enumerate(orders) for it in group(f"g{n}", list(order))]
    results = await judged(stand_in, items, "stand-in", template="listwise",
                           group_mode="listwise", mode="parse", parse_retries=0)  # fmt: skip
    for item, result in zip(items, results, strict=True):
        assert result.value == {3: 1.0, 2: 0.5, 1: 0.0}[quality(item.response)], item.id
