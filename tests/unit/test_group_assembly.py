"""Group assembly in the engine: a group's items sent over several requests are scored
together, exactly as if the group had come in one request; timeouts, limits and
contradictions are answered per item or per request, never by mixing groups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from referee.config import load_settings
from referee.engine import RewardEngine
from referee.errors import ErrorKind, RefereeError
from referee_client.schema import RewardRequest, RewardResult


def config(**groups: Any) -> dict[str, Any]:
    return {
        "server": {"request_timeout_s": 30},
        "groups": {"timeout_s": 5, **groups},
        "scorers": {"match": {"kind": "match", "options": {"mode": "normalized"}},
                    "length": {"kind": "length", "options": {"mode": "overlong", "unit": "chars",
                                                             "max_length": 30, "buffer_length": 20}}},
        "pipelines": {
            "grpo": {"reward": {"type": "weighted_sum", "name": "raw", "weights": [1.0, 1.0],
                                "inputs": ["match", "length"],
                                "transforms": [{"type": "group_norm"}]}},
            "grpo8": {"group_size": 3, "reward": {"type": "scorer", "scorer": "match",
                                                  "transforms": [{"type": "group_norm"}]}},
            "plain": {"reward": "match"},
        },
    }  # fmt: skip


@pytest.fixture
async def engine() -> AsyncIterator[RewardEngine]:
    e = RewardEngine(load_settings(data=config(), environ={}))
    await e.start()
    yield e
    await e.close()


async def make(**groups: Any) -> RewardEngine:
    e = RewardEngine(load_settings(data=config(**groups), environ={}))
    await e.start()
    return e


ANSWERS = ["42", "41", "42", "a much longer wrong answer than allowed here", "42", "7"]


def rollout(i: int, group: str, answer: str, item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or f"r{i}", "prompt": f"prompt of {group}", "response": answer,
            "reference": "42", "group": group}  # fmt: skip


def request(items: list[dict[str, Any]], pipeline: str = "grpo", **options: Any) -> RewardRequest:
    return RewardRequest.model_validate({"pipeline": pipeline, "items": items, "options": options})


async def one_at_a_time(engine: RewardEngine, items: list[dict[str, Any]],
                        **options: Any) -> list[RewardResult]:  # fmt: skip
    async def send(item: dict[str, Any]) -> RewardResult:
        (result,) = (await engine.score(request([item], **options))).results
        return result

    return list(await asyncio.gather(*(send(item) for item in items)))


async def test_per_item_requests_give_the_rewards_of_the_whole_group_in_one_request(
    engine: RewardEngine,
) -> None:
    items = [rollout(i, "g", a) for i, a in enumerate(ANSWERS)]
    whole = (await engine.score(request(items))).results
    parts = await one_at_a_time(engine, items, group_size=len(items))
    assert [r.id for r in parts] == [r.id for r in whole]
    assert [r.reward for r in parts] == pytest.approx([r.reward for r in whole])
    assert [r.components for r in parts] == [r.components for r in whole]
    assert whole[0].reward is not None and whole[0].reward > 0 > whole[1].reward  # right > wrong
    assert engine.groups.pending_items == 0


async def test_groups_with_the_same_item_ids_never_mix(engine: RewardEngine) -> None:
    """Two groups assembled at once, interleaved, each request naming its item "0" (as
    OpenRLHF's route does): each group is normalised over its own items only."""
    g1 = [rollout(i, "g1", a, item_id="0") for i, a in enumerate(ANSWERS[:4])]
    g2 = [rollout(i, "g2", a, item_id="0") for i, a in enumerate(["7", "7", "42", "8"])]
    interleaved = [x for pair in zip(g1, g2, strict=True) for x in pair]
    got = await one_at_a_time(engine, interleaved, group_size=4)
    for own, group in ((got[0::2], g1), (got[1::2], g2)):
        whole = await engine.score(request([{**x, "id": f"w{i}"} for i, x in enumerate(group)]))
        assert [r.reward for r in own] == pytest.approx([r.reward for r in whole.results])
        assert all(r.id == "0" for r in own)


async def test_a_request_holding_several_items_of_a_group_gets_them_back_in_its_order(
    engine: RewardEngine,
) -> None:
    items = [rollout(i, "g", a) for i, a in enumerate(ANSWERS[:4])]
    whole = {r.id: r.reward for r in (await engine.score(request(items))).results}
    first = asyncio.ensure_future(engine.score(request([items[2], items[0]], group_size=4)))
    await asyncio.sleep(0.05)
    assert not first.done()  # waits for the rest of its group
    second = await engine.score(request([items[3], items[1]], group_size=4))
    done = (await first).results
    assert [r.id for r in done] == ["r2", "r0"] and [r.id for r in second.results] == ["r3", "r1"]
    for r in [*done, *second.results]:
        assert r.reward == pytest.approx(whole[r.id])


async def test_whole_groups_and_ungrouped_items_are_not_held(engine: RewardEngine) -> None:
    whole = [rollout(i, "w", a) for i, a in enumerate(ANSWERS[:3])]
    loose = {"id": "x", "response": "42", "reference": "42"}
    got = await asyncio.wait_for(engine.score(request([*whole, loose], group_size=3)), 2)
    assert [r.id for r in got.results] == ["r0", "r1", "r2", "x"]
    assert got.results[3].reward == 0.0  # a group of one has no advantage


async def test_pipeline_default_group_size_applies_when_the_request_says_none(
    engine: RewardEngine,
) -> None:
    items = [rollout(i, "g", a) for i, a in enumerate(["42", "1", "2"])]
    got = await one_at_a_time(engine, items)
    assert got[0].reward == 0.0  # "grpo" has no default size: each request a group of one
    got = [
        r
        for x in await asyncio.gather(
            *(engine.score(request([x], pipeline="grpo8")) for x in items)
        )
        for r in x.results
    ]
    assert got[0].reward == pytest.approx(2 / 3 / (3**-0.5 + 1e-6), rel=1e-4)


async def test_pipelines_without_group_steps_ignore_group_size(engine: RewardEngine) -> None:
    got = await asyncio.wait_for(
        engine.score(request([rollout(0, "g", "42")], pipeline="plain", group_size=8)), 2
    )
    assert got.results[0].reward == 1.0


async def test_timed_out_group_is_scored_with_what_arrived_and_says_so() -> None:
    engine = await make(timeout_s=0.3)
    try:
        items = [rollout(i, "g", a) for i, a in enumerate(["42", "0"])]
        got = await one_at_a_time(engine, items, group_size=4)
        whole = (await engine.score(request(items))).results
    finally:
        await engine.close()
    assert [r.reward for r in got] == pytest.approx([r.reward for r in whole])
    for r in got:
        assert r.error is None and r.info is not None
        assert "2 of 4 items arrived" in r.info["group"]


async def test_timed_out_group_gives_per_item_errors_when_configured() -> None:
    engine = await make(timeout_s=0.3, on_timeout="error")
    try:
        got = await one_at_a_time(engine, [rollout(0, "g", "42")], group_size=4)
    finally:
        await engine.close()
    assert got[0].reward is None and got[0].error is not None
    assert got[0].error.type == "group_incomplete" and "1 of 4" in got[0].error.message


async def test_memory_is_bounded_then_429_and_completing_items_still_get_in() -> None:
    engine = await make(max_pending_items=3)
    try:
        waiting = [asyncio.ensure_future(engine.score(request([rollout(i, "g", "42")],
                                                               group_size=4)))
                   for i in range(3)]  # fmt: skip
        await asyncio.sleep(0.05)
        with pytest.raises(RefereeError) as refused:
            await engine.score(request([rollout(9, "other", "42")], group_size=4))
        assert refused.value.kind is ErrorKind.OVERLOADED
        last = await engine.score(request([rollout(3, "g", "1")], group_size=4))
        firsts = await asyncio.gather(*waiting)
    finally:
        await engine.close()
    assert last.results[0].reward is not None and last.results[0].reward < 0
    assert all(f.results[0].reward is not None and f.results[0].reward > 0 for f in firsts)


async def test_contradicting_group_size_or_overfull_group_is_refused(engine: RewardEngine) -> None:
    first = asyncio.ensure_future(engine.score(request([rollout(0, "g", "42")], group_size=4)))
    await asyncio.sleep(0.05)
    with pytest.raises(RefereeError, match="group_size 4; this request says 3"):
        await engine.score(request([rollout(1, "g", "42")], group_size=3))
    second = asyncio.ensure_future(
        engine.score(request([rollout(i, "g", "1") for i in (1, 2)], group_size=4))
    )
    await asyncio.sleep(0.05)
    with pytest.raises(RefereeError, match="more than the group holds"):
        await engine.score(request([rollout(i, "g", "1") for i in (3, 4)], group_size=4))
    assert not first.done() and not second.done()
    last = await engine.score(request([rollout(3, "g", "1")], group_size=4))
    assert (await first).results[0].reward == pytest.approx(1.5, rel=1e-4)  # 1 right of 4, ddof=1
    assert len((await second).results) == 2 and last.results[0].error is None


async def test_ingress_engines_hand_partial_groups_to_the_one_group_owner() -> None:
    """Ray mode's shape: two ingress engines, one group owner (as GroupOwnerReplica);
    a group's items reaching both ingresses are assembled at the owner."""
    owner = await make()
    forwarded: list[int] = []

    async def to_owner(req: RewardRequest) -> Any:
        forwarded.append(len(req.items))
        return await owner.score(req)

    ingresses = [RewardEngine(load_settings(data=config(), environ={}), group_owner=to_owner)
                 for _ in range(2)]  # fmt: skip
    for e in ingresses:
        await e.start()
    try:
        items = [rollout(i, "g", a) for i, a in enumerate(ANSWERS[:4])]
        got = await asyncio.gather(*(
            ingresses[i % 2].score(request([x], group_size=4)) for i, x in enumerate(items)
        ))  # fmt: skip
        whole = await ingresses[0].score(request(items, group_size=4))  # whole: stays here
    finally:
        for e in [*ingresses, owner]:
            await e.close()
    assert [r.results[0].reward for r in got] == pytest.approx([r.reward for r in whole.results])
    assert forwarded == [1, 1, 1, 1]


def test_the_documented_groups_config_loads_as_documented() -> None:
    import re
    from pathlib import Path

    import yaml

    page = Path(__file__).resolve().parents[2] / "docs" / "trainers" / "groups.md"
    marker = r"<!-- doctest: test \(tests/unit/test_group_assembly.py: groups-config\) -->"
    block = re.search(marker + r"\s*```yaml\n(.*?)```", page.read_text(), re.S)
    assert block is not None
    settings = load_settings(data=yaml.safe_load(block.group(1)), environ={})
    assert settings.groups.timeout_s == 60 and settings.groups.on_timeout == "score"
    assert settings.pipelines["math_rl"].group_size == 8
    engine = RewardEngine(settings)
    assert engine.pipelines["math_rl"].needs_groups and engine.pipelines["math_rl"].group_size == 8
    default = load_settings(data={"server": {"request_timeout_s": 30},
                                  **{k: v for k, v in yaml.safe_load(block.group(1)).items()
                                     if k != "groups"}}, environ={})  # fmt: skip
    assert default.groups.timeout_s == 15  # half the request timeout when not set
