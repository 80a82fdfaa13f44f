"""The trainer-side micro-batcher (verl's per-item calls): concurrent calls share a
request, each caller gets its own item's result, batches respect max_items, and a failed
request fails each of its callers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from referee_client.adapters._coalesce import Coalescer
from referee_client.schema import RewardItem, RewardResponse, RewardResult, Usage


class Server:
    """Answers reward = len(response); records each request's items."""

    def __init__(self, fail: bool = False) -> None:
        self.requests: list[list[RewardItem]] = []
        self.fail = fail

    async def score(self, items: list[RewardItem], **kwargs: Any) -> RewardResponse:
        self.requests.append(items)
        await asyncio.sleep(0.01)
        if self.fail:
            raise ConnectionError("server went away")
        results = [RewardResult(id=i.id, reward=float(len(i.response or ""))) for i in items]
        return RewardResponse(pipeline="p", pipeline_version="v", results=results,
                              usage=Usage(items=len(items), cache_hits=0, errors=0))  # fmt: skip


def item(text: str) -> RewardItem:
    return RewardItem(id="same-id", response=text)


async def test_concurrent_calls_share_one_request_and_get_their_own_results() -> None:
    server = Server()
    c = Coalescer(server, pipeline="p", window_s=0.01)  # type: ignore[arg-type]
    results = await asyncio.gather(*(c.score(item("x" * n)) for n in range(10)))
    assert [r.reward for r in results] == [float(n) for n in range(10)]
    assert all(r.id == "same-id" for r in results)
    assert len(server.requests) == 1 and len(server.requests[0]) == 10


async def test_batches_hold_at_most_max_items() -> None:
    server = Server()
    c = Coalescer(server, pipeline="p", window_s=0.01, max_items=4)  # type: ignore[arg-type]
    results = await asyncio.gather(*(c.score(item("x" * n)) for n in range(10)))
    assert [r.reward for r in results] == [float(n) for n in range(10)]
    assert [len(r) for r in server.requests] == [4, 4, 2]


async def test_a_failed_request_fails_each_caller() -> None:
    c = Coalescer(Server(fail=True), pipeline="p", window_s=0.01)  # type: ignore[arg-type]
    outcomes = await asyncio.gather(*(c.score(item("x")) for _ in range(3)),
                                    return_exceptions=True)  # fmt: skip
    assert all(isinstance(o, ConnectionError) for o in outcomes)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Coalescer(Server(), pipeline="p", max_items=0)  # type: ignore[arg-type]
