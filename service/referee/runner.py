"""Cache + single flight + batcher in front of one scorer: the engine asks a runner for
results and gets them from the memory level, the shared (Redis) level, an identical item
already being scored, or a new batch, in that order."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Sequence

from referee.batching import DynamicBatcher, Pending
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
        self._inflight: dict[str, asyncio.Future[ScoreResult]] = {}
        self._pending: dict[str, Pending] = {}

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
        waits: list[asyncio.Future[ScoreResult] | None] = []
        new: list[tuple[ScoreInput, asyncio.Future[ScoreResult]]] = []
        new_keys: list[str] = []
        loop = asyncio.get_running_loop()
        for item, key, hit in zip(items, keys, hits, strict=True):
            if hit is not None:
                waits.append(None)
                continue
            future = self._inflight.get(key)
            if future is None:
                future = loop.create_future()
                self._inflight[key] = future
                new.append((item, future))
                new_keys.append(key)
            else:
                self.metrics.inflight_joins.labels(name).inc()
                waiting = self._pending.get(key)
                if waiting is not None and waiting.deadline < deadline:
                    waiting.deadline = deadline  # a later waiter keeps the item wanted
            waits.append(future)
        if new:
            try:
                prepared = await self.scorer.prepare([item for item, _ in new])
                submitted = self.batcher.submit(new, deadline, prepared)
            except BaseException as exc:
                for key, (_, future) in zip(new_keys, new, strict=True):
                    self._inflight.pop(key, None)
                    if not future.done():  # requests that joined meanwhile get an answer
                        future.set_exception(exc)
                        future.exception()  # seen here; joiners still receive it
                raise
            for key, entry in zip(new_keys, submitted, strict=True):
                self._pending[key] = entry
                entry.future.add_done_callback(functools.partial(self._finished, key))
        pending = [f for f in waits if f is not None]
        if pending:
            # Shield: a caller that gives up must not cancel work other callers share.
            await asyncio.shield(asyncio.gather(*pending))
        out: list[LeafScore] = []
        for hit, future in zip(hits, waits, strict=True):
            if future is None:
                assert hit is not None
                out.append(LeafScore(hit, cached=True))
            else:
                out.append(LeafScore(future.result(), cached=False))
        return out

    def _finished(self, key: str, future: asyncio.Future[ScoreResult]) -> None:
        self._inflight.pop(key, None)
        self._pending.pop(key, None)
        if future.cancelled() or future.exception() is not None:
            return
        result = future.result()
        if result.error is None and result.cacheable:
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
