"""Cache + single flight + batcher in front of one scorer: the engine asks a runner for
results and gets them from the memory level, the shared (Redis) level, an identical item
already being scored, or a new batch, in that order."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from referee.batching import DynamicBatcher, Pending, Waiter
from referee.cache import ScoreCache, cache_key
from referee.cache.redis import RedisCache
from referee.metrics import Metrics
from referee.pipeline import LeafScore
from referee.scorers import ScoreInput, Scorer, ScoreResult

__all__ = ["ScorerRunner"]


class ScorerRunner:
    """Cache + single flight + batcher in front of one scorer."""

    def __init__(self, scorer: Scorer, cache: ScoreCache, batcher: DynamicBatcher,
                 metrics: Metrics, shared: RedisCache | None = None) -> None:  # fmt: skip
        self.scorer = scorer
        self.cache = cache
        self.shared = shared  # the second level, shared by replicas (Redis)
        self.batcher = batcher
        self.metrics = metrics
        self.fingerprint = scorer.fingerprint()
        self.fields = scorer.cache_fields()
        self._inflight: dict[str, Pending] = {}
        name = scorer.name
        self._joins = metrics.inflight_joins.labels(name)

    def key(self, item: ScoreInput) -> str:
        return cache_key(self.fingerprint, item, self.fields)

    async def score(
        self, items: Sequence[ScoreInput], deadline: float = math.inf
    ) -> list[LeafScore]:
        """Results for ``items`` in order; ``deadline`` (time.monotonic) is when the caller
        stops waiting, so queued work nobody waits for any more can be dropped."""
        name = self.scorer.name
        keys = [self.key(item) for item in items]
        hits = self.cache.get_many(keys)
        level = self.cache.level
        n_first = sum(hit is not None for hit in hits)
        if n_first:
            self.metrics.cache_hits.labels(name, level).inc(n_first)
        if len(items) - n_first:
            self.metrics.cache_misses.labels(name, level).inc(len(items) - n_first)
        if self.shared is not None:
            await self._from_shared(keys, hits)
        waits: list[Pending | None] = []
        new: list[Pending] = []
        joins = 0
        inflight = self._inflight
        for item, key, hit in zip(items, keys, hits, strict=True):
            if hit is not None:
                waits.append(None)
                continue
            pending = inflight.get(key)
            if pending is None:
                pending = inflight[key] = Pending(item, 0, deadline, key=key)
                new.append(pending)
            else:
                joins += 1
                if pending.deadline < deadline:
                    pending.deadline = deadline  # a later waiter keeps the item wanted
            waits.append(pending)
        if joins:
            self._joins.inc(joins)
        if new:
            try:
                prepared = await self.scorer.prepare([p.item for p in new])
                for pending, ready in zip(new, prepared, strict=True):
                    pending.cost, pending.prepared = ready.cost, ready
                self.batcher.enqueue(new)
            except BaseException as exc:
                for pending in new:  # requests that joined meanwhile get an answer
                    if inflight.get(pending.key or "") is pending:
                        del inflight[pending.key or ""]
                    pending.fail(exc)
                raise
            for pending in new:
                pending.listeners.append(self._finished)
        waiting = [p for p in waits if p is not None]
        if waiting:
            # Shield: a caller that gives up must not cancel work other callers share.
            await asyncio.shield(Waiter(asyncio.get_running_loop(), waiting).future)
        out: list[LeafScore] = []
        for hit, pending in zip(hits, waits, strict=True):
            if pending is None:
                assert hit is not None
                out.append(LeafScore(hit, cached=True))
            elif pending.exception is not None:
                raise pending.exception
            else:
                assert pending.result is not None
                out.append(LeafScore(pending.result, cached=False))
        return out

    def _finished(self, pending: Pending) -> None:
        key = pending.key
        assert key is not None
        if self._inflight.get(key) is pending:
            del self._inflight[key]
        result = pending.result
        if result is not None and result.error is None and result.cacheable:
            self.cache.set_many([(key, result)])
            if self.shared is not None:
                self.shared.set_later(key, result)

    async def _from_shared(self, keys: list[str], hits: list[ScoreResult | None]) -> None:
        """Fill first-level misses from the shared level (in place), and keep what it had."""
        missing = [i for i, hit in enumerate(hits) if hit is None]
        if not missing or self.shared is None:
            return
        found = await self.shared.get_many([keys[i] for i in missing])
        filled: list[tuple[str, ScoreResult]] = []
        for i, result in zip(missing, found, strict=True):
            if result is not None:
                hits[i] = result
                filled.append((keys[i], result))
        n_found = len(filled)
        if n_found:
            self.cache.set_many(filled)
            self.metrics.cache_hits.labels(self.scorer.name, "redis").inc(n_found)
        if len(missing) - n_found:
            self.metrics.cache_misses.labels(self.scorer.name, "redis").inc(len(missing) - n_found)
