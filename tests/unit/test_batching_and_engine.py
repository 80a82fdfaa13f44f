"""The batcher's contract (one result per item, isolation of failing items, token budget,
bounded queue) and the engine's single flight, with small scorers written for the purpose."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from referee.batching import DynamicBatcher
from referee.cache import MemoryCache
from referee.config import BatchingSettings
from referee.engine import ScorerRunner
from referee.errors import ErrorKind, RefereeError
from referee.metrics import Metrics
from referee.scorers.base import ScoreInput, Scorer, ScoreResult


def item(text: str, i: int = 0) -> ScoreInput:
    return ScoreInput(id=f"i{i}", prompt="", response=text, reference=None, group=None,
                      messages=None, metadata=None)  # fmt: skip


class Recorder(Scorer):
    kind = "recorder"

    def __init__(self, *, drop_one: bool = False, poison: str | None = None,
                 delay: float = 0.0) -> None:  # fmt: skip
        super().__init__("rec", Scorer.Options())
        self.batches: list[list[str]] = []
        self.drop_one, self.poison, self.delay = drop_one, poison, delay

    def cost(self, item: ScoreInput) -> int:
        return len(item.response)

    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        self.batches.append([x.response for x in items])
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.poison and any(x.response == self.poison for x in items):
            raise RuntimeError("poisoned batch")
        out = [ScoreResult(value=float(len(x.response))) for x in items]
        return out[:-1] if self.drop_one else out


async def run_batcher(scorer: Scorer, texts: list[str], **settings: float) -> list[ScoreResult]:
    batcher = DynamicBatcher(scorer, BatchingSettings(**settings), Metrics())
    batcher.start()
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in texts]
    batcher.submit([(item(t, i), f) for i, (t, f) in enumerate(zip(texts, futures, strict=True))])
    try:
        return list(await asyncio.gather(*futures))
    finally:
        await batcher.stop()


async def test_one_result_per_item_in_order() -> None:
    scorer = Recorder()
    results = await run_batcher(scorer, ["a", "bb", "ccc"] * 10, max_batch_size=7)
    assert [r.value for r in results] == [1.0, 2.0, 3.0] * 10
    assert all(len(b) <= 7 for b in scorer.batches)


async def test_batch_size_mismatch_fails_loudly_per_item() -> None:
    results = await run_batcher(Recorder(drop_one=True), ["a", "b", "c"])
    assert all(r.error and "batch size mismatch" in r.error for r in results)
    assert {r.error_type for r in results} == {"internal"}


async def test_exception_fails_only_the_item_that_raises() -> None:
    scorer = Recorder(poison="bad")
    results = await run_batcher(scorer, ["ok", "bad", "fine"], max_wait_ms=50)
    assert [r.value for r in results] == [2.0, None, 4.0]
    assert results[1].error == "RuntimeError: poisoned batch"


async def test_token_budget_bounds_padded_batch_size() -> None:
    scorer = Recorder()
    texts = ["x" * 10] * 6 + ["y" * 40]
    await run_batcher(scorer, texts, max_batch_tokens=40, max_wait_ms=50)
    for batch in scorer.batches:
        assert max(len(t) for t in batch) * len(batch) <= 40
    assert sorted(len(b) for b in scorer.batches) == [1, 2, 4]


async def test_full_queue_refuses_whole_submission_with_retry_after() -> None:
    scorer = Recorder(delay=0.2)
    batcher = DynamicBatcher(
        scorer, BatchingSettings(max_batch_size=1, max_concurrent_batches=1, max_queue_items=3,
                                 max_wait_ms=0), Metrics())  # fmt: skip
    batcher.start()
    loop = asyncio.get_running_loop()
    try:
        first = [loop.create_future() for _ in range(3)]
        batcher.submit([(item("a", i), f) for i, f in enumerate(first)])
        second = [loop.create_future() for _ in range(2)]
        with pytest.raises(RefereeError) as info:
            batcher.submit([(item("b", i), f) for i, f in enumerate(second)])
        assert info.value.kind is ErrorKind.OVERLOADED and info.value.retry_after_s
        assert batcher.depth <= 3
        assert [r.value for r in await asyncio.gather(*first)] == [1.0, 1.0, 1.0]
    finally:
        await batcher.stop()


async def test_request_larger_than_queue_is_accepted_when_queue_is_empty() -> None:
    results = await run_batcher(Recorder(), ["a"] * 10, max_queue_items=4)
    assert len(results) == 10


@contextlib.asynccontextmanager
async def cached_runner(scorer: Recorder, max_wait_ms: float) -> AsyncIterator[ScorerRunner]:
    """A ScorerRunner (memory cache, single flight) over a started batcher."""
    metrics = Metrics()
    batcher = DynamicBatcher(scorer, BatchingSettings(max_wait_ms=max_wait_ms), metrics)
    batcher.start()
    try:
        yield ScorerRunner(scorer, MemoryCache(100), batcher, metrics)
    finally:
        await batcher.stop()


async def test_single_flight_computes_identical_items_once() -> None:
    scorer = Recorder(delay=0.05)
    async with cached_runner(scorer, max_wait_ms=5) as runner:
        calls = [runner.score([item("same", k), item(f"u{k}", k)]) for k in range(20)]
        results = await asyncio.gather(*calls)
        computed = [t for batch in scorer.batches for t in batch]
        assert computed.count("same") == 1
        assert all(r[0].result.value == 4.0 for r in results)
        again = await runner.score([item("same")])
        assert again[0].cached is True


async def test_caller_timeout_does_not_cancel_shared_work() -> None:
    scorer = Recorder(delay=0.2)
    async with cached_runner(scorer, max_wait_ms=0) as runner:
        patient = asyncio.create_task(runner.score([item("shared")]))
        with pytest.raises(asyncio.TimeoutError):  # not the builtin one on 3.10
            await asyncio.wait_for(runner.score([item("shared")]), 0.05)
        assert (await patient)[0].result.value == 6.0
        assert (await runner.score([item("shared")]))[0].cached


async def test_length_order_packs_similar_lengths_and_never_starves_the_oldest() -> None:
    """A long-tailed mix queued together: batches by length hold items of similar size
    (little padding), every item is answered, and the oldest item goes in the first batch."""
    import random

    rng = random.Random(7)
    texts = ["x" * rng.choice([3, 5, 8, 13, 60, 200, 900]) for _ in range(120)]
    texts[0] = "x" * 900  # the oldest is the longest: it must not wait behind short ones

    async def run(order: str) -> tuple[Recorder, float]:
        scorer = Recorder()
        metrics = Metrics()
        batcher = DynamicBatcher(
            scorer,
            BatchingSettings(max_batch_size=16, max_batch_tokens=4000, order=order),  # type: ignore[arg-type]
            metrics,
        )
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in texts]
        batcher.submit(
            [(item(t, i), f) for i, (t, f) in enumerate(zip(texts, futures, strict=True))]
        )
        batcher.start()  # after submitting: the first batch sees the whole queue
        results = await asyncio.gather(*futures)
        await batcher.stop()
        assert [r.value for r in results] == [float(len(t)) for t in texts]
        real = sum(len(t) for t in texts)
        padded = sum(max(len(t) for t in b) * len(b) for b in scorer.batches)
        return scorer, real / padded

    by_length, efficiency = await run("length")
    _, arrival_efficiency = await run("arrival")
    assert "x" * 900 in by_length.batches[0]
    assert all(max(map(len, b)) * len(b) <= 4000 for b in by_length.batches)
    # every batch keeps real tokens at least 90% of padded ones (the padding floor)
    assert all(sum(map(len, b)) >= 0.9 * max(map(len, b)) * len(b) for b in by_length.batches)
    assert efficiency >= 0.9 > arrival_efficiency


async def test_length_order_does_not_pad_short_items_to_a_long_oldest_one() -> None:
    scorer = Recorder()
    texts = ["x" * 400] + ["y" * 10] * 20
    batcher = DynamicBatcher(scorer, BatchingSettings(max_batch_size=64, order="length"), Metrics())
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in texts]
    batcher.submit([(item(t, i), f) for i, (t, f) in enumerate(zip(texts, futures, strict=True))])
    batcher.start()
    await asyncio.gather(*futures)
    await batcher.stop()
    assert scorer.batches[0] == ["x" * 400]  # the oldest goes first, and alone
    assert scorer.batches[1:] == [["y" * 10] * 20]


async def test_length_order_answers_expired_items_without_scoring_them() -> None:
    import time

    scorer = Recorder()
    batcher = DynamicBatcher(scorer, BatchingSettings(order="length"), Metrics())
    loop = asyncio.get_running_loop()
    stale = [loop.create_future() for _ in range(3)]
    fresh = [loop.create_future() for _ in range(2)]
    batcher.submit([(item("x" * 5, i), f) for i, f in enumerate(stale)], time.monotonic() - 1)
    batcher.submit([(item("y" * 5, 10 + i), f) for i, f in enumerate(fresh)])
    batcher.start()
    results = await asyncio.gather(*stale, *fresh)
    await batcher.stop()
    assert [r.error_type for r in results[:3]] == ["timeout"] * 3
    assert [r.value for r in results[3:]] == [5.0, 5.0]
    assert scorer.batches == [["y" * 5] * 2]  # the expired items never reached the scorer


class Gated(Recorder):
    """A Recorder whose first batch runs until ``gate`` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        if not self.batches:
            self.batches.append([x.response for x in items])
            await self.gate.wait()
            return [ScoreResult(value=float(len(x.response))) for x in items]
        return await super().score_batch(items)


async def test_continuous_batching_fills_the_next_batch_with_everything_queued_meanwhile() -> None:
    """Small submissions (stream messages of 8) that arrive while a batch runs wait for
    the next free slot and go into it together: one batch, not one per submission."""
    scorer = Gated()
    batcher = DynamicBatcher(
        scorer, BatchingSettings(max_batch_size=256, max_concurrent_batches=1), Metrics()
    )
    batcher.start()
    loop = asyncio.get_running_loop()
    try:
        first = [loop.create_future()]
        batcher.submit([(item("first"), first[0])])
        for _ in range(5):  # an idle scorer starts at once: no timer to wait out
            await asyncio.sleep(0)
        assert scorer.batches == [["first"]]
        later: list[asyncio.Future[ScoreResult]] = []
        for m in range(20):  # 20 messages of 8 items while the first batch runs
            futures = [loop.create_future() for _ in range(8)]
            batcher.submit([(item(f"m{m}", k), f) for k, f in enumerate(futures)])
            later.extend(futures)
            await asyncio.sleep(0)
        scorer.gate.set()
        results = await asyncio.gather(*first, *later)
        assert [r.value for r in results] == [5.0] + [float(len(f"m{m}")) for m in range(20)
                                                       for _ in range(8)]  # fmt: skip
        assert [len(b) for b in scorer.batches] == [1, 160]
    finally:
        await batcher.stop()


async def test_linger_applies_only_to_an_idle_scorer() -> None:
    """max_wait_ms > 0: an idle scorer waits for company (here until the batch is full);
    a busy one never adds the linger to the batch it forms when a slot frees."""
    scorer = Gated()
    batcher = DynamicBatcher(
        scorer,
        BatchingSettings(max_wait_ms=10_000, max_batch_size=2, max_concurrent_batches=2),
        Metrics(),
    )
    batcher.start()
    loop = asyncio.get_running_loop()
    try:
        a, b, c = loop.create_future(), loop.create_future(), loop.create_future()
        batcher.submit([(item("a"), a)])
        for _ in range(5):
            await asyncio.sleep(0)
        assert scorer.batches == []  # idle: lingering for a fuller batch
        batcher.submit([(item("b", 1), b)])  # full: the linger ends
        for _ in range(5):
            await asyncio.sleep(0)
        assert scorer.batches == [["a", "b"]]  # running, held by the gate
        batcher.submit([(item("c", 2), c)])  # busy, a slot free: no linger
        for _ in range(5):
            await asyncio.sleep(0)
        assert scorer.batches == [["a", "b"], ["c"]]
        scorer.gate.set()
        await asyncio.gather(a, b, c)
    finally:
        await batcher.stop()


def test_observe_many_renders_exactly_as_one_observe_per_value() -> None:
    import random

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from referee.metrics import LATENCY_BUCKETS, observe_many

    rng = random.Random(3)
    values = [rng.choice([0.0, 0.001, 60.0, 61.0, -1.0]) if rng.random() < 0.2
              else rng.expovariate(3) for _ in range(5000)]  # fmt: skip
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("x", "x", ["a"], buckets=LATENCY_BUCKETS, registry=one).labels("q")
    h2 = Histogram("x", "x", ["a"], buckets=LATENCY_BUCKETS, registry=many).labels("q")
    for value in values:
        h1.observe(value)
    observe_many(h2, values)

    def samples(registry: CollectorRegistry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        return [x for x in lines if "_created" not in x and "_sum" not in x]

    assert samples(one) == samples(many)
    assert abs(h1._sum.get() - h2._sum.get()) < 1e-6
