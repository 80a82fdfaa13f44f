"""Continuous batching per scorer: a batch is formed when the scorer has a free slot to
run it, from the items of every request queued by then, bounded by count and padded
tokens, with a bounded queue that refuses work (429) instead of growing without limit.

Contract enforced here: a batch yields exactly one result per item. A scorer that returns
the wrong number fails the batch loudly; a batch that raises is retried item by item so
only the item that raises gets an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence

from referee.config import BatchingSettings
from referee.errors import ErrorKind, RefereeError
from referee.metrics import Metrics, observe_many
from referee.scorers.base import (
    BATCH_DEADLINE,
    Prepared,
    ScoreInput,
    Scorer,
    ScoreResult,
    past_deadline_result,
)

__all__ = ["DynamicBatcher", "Pending", "Waiter"]

log = logging.getLogger(__name__)

# Length ordering looks at this many of the oldest waiting items (sorting is O(n log n)),
# and grows a batch only while real tokens are at least this share of padded tokens.
_LENGTH_WINDOW = 8192
_MIN_PADDING_EFFICIENCY = 0.9


class Pending:
    """One queued item and, once scored, its result. ``deadline`` (time.monotonic) is the
    latest deadline among the requests waiting for it; single-flight joiners extend it.

    No asyncio future per item: whoever waits registers a listener, called once with the
    pending item when it is resolved (a request waits on one future for all its items)."""

    __slots__ = ("cost", "deadline", "enqueued", "exception", "item", "key", "listeners",
                 "prepared", "result")  # fmt: skip

    def __init__(
        self, item: ScoreInput, cost: int, deadline: float = math.inf,
        prepared: Prepared | None = None, key: str | None = None,
    ) -> None:  # fmt: skip
        self.item = item
        self.cost = cost
        self.deadline = deadline
        self.prepared = prepared
        self.key = key
        self.enqueued = 0.0
        self.result: ScoreResult | None = None
        self.exception: BaseException | None = None
        self.listeners: list[Callable[[Pending], None]] = []

    @property
    def done(self) -> bool:
        return self.result is not None or self.exception is not None

    def resolve(self, result: ScoreResult) -> None:
        """Set the result (the first one wins) and tell every listener."""
        if self.done:
            return
        self.result = result
        self._notify()

    def fail(self, exc: BaseException) -> None:
        """The item could not even be queued: its waiters receive ``exc``."""
        if self.done:
            return
        self.exception = exc
        self._notify()

    def listen(self, listener: Callable[[Pending], None]) -> None:
        if self.done:
            listener(self)
        else:
            self.listeners.append(listener)

    def _notify(self) -> None:
        listeners, self.listeners = self.listeners, []
        for listener in listeners:
            try:
                listener(self)
            except Exception:  # one broken listener must not keep the others waiting
                log.exception("a listener of a scored item failed")


class Waiter:
    """One future for many pending items: done when every one of them is resolved."""

    __slots__ = ("future", "left")

    def __init__(self, loop: asyncio.AbstractEventLoop, items: Sequence[Pending]) -> None:
        self.future: asyncio.Future[None] = loop.create_future()
        self.left = 0
        for pending in items:
            if not pending.done:
                self.left += 1
                pending.listeners.append(self)
        if not self.left:
            self.future.set_result(None)

    def __call__(self, pending: Pending) -> None:
        self.left -= 1
        if self.left <= 0 and not self.future.done():
            self.future.set_result(None)


def _set_future(future: asyncio.Future[ScoreResult]) -> Callable[[Pending], None]:
    def listener(pending: Pending) -> None:
        if future.done():
            return
        if pending.exception is not None:
            future.set_exception(pending.exception)
        else:
            assert pending.result is not None
            future.set_result(pending.result)

    return listener


class DynamicBatcher:
    def __init__(self, scorer: Scorer, settings: BatchingSettings, metrics: Metrics) -> None:
        self.scorer = scorer
        self.settings = settings
        self.metrics = metrics
        self._queue: deque[Pending] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_concurrent_batches)
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        name = scorer.name  # labelled children resolved once: this is the per-item hot path
        self._depth = metrics.queue_depth.labels(name)
        self._queue_wait = metrics.queue_wait.labels(name)
        self._batch_size = metrics.batch_size.labels(name)
        self._batch_tokens = metrics.batch_tokens.labels(name)
        self._compute = metrics.compute_latency.labels(name)
        self._padding = metrics.padding_efficiency.labels(name)
        self.order = settings.order or scorer.batch_order

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name=f"batcher-{self.scorer.name}")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking batches; give running ones ``grace_s`` to finish, then cancel them
        (their items get a "shutdown" error). Queued items get the same error."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._running:
            _, still = await asyncio.wait(set(self._running), timeout=grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=grace_s)
        while self._queue:
            self._queue.popleft().resolve(ScoreResult.failed("server shutting down", "shutdown"))

    def submit(
        self,
        items: Sequence[tuple[ScoreInput, asyncio.Future[ScoreResult]]],
        deadline: float = math.inf,
        prepared: Sequence[Prepared] | None = None,
    ) -> list[Pending]:
        """Queue items, each answered through its own future (see ``enqueue``)."""
        if prepared is None:
            queued = [Pending(item, self.scorer.cost(item), deadline) for item, _ in items]
        else:
            queued = [
                Pending(item, ready.cost, deadline, ready)
                for (item, _), ready in zip(items, prepared, strict=True)
            ]
        self.enqueue(queued)
        for pending, (_, future) in zip(queued, items, strict=True):
            pending.listeners.append(_set_future(future))
        return queued

    def enqueue(self, queued: Sequence[Pending]) -> None:
        """Queue items, all or none: a full queue refuses the whole submission."""
        if self._queue and len(self._queue) + len(queued) > self.settings.max_queue_items:
            self.metrics.overloaded.labels(self.scorer.name).inc()
            raise RefereeError(
                ErrorKind.OVERLOADED,
                f"scorer {self.scorer.name!r} is overloaded ({len(self._queue)} items queued, "
                f"limit {self.settings.max_queue_items}); retry later",
                retry_after_s=1.0,
            )
        now = time.perf_counter()
        for pending in queued:
            pending.enqueued = now
        self._queue.extend(queued)
        self._depth.set(len(self._queue))
        self._wakeup.set()

    def _window(self) -> list[Pending]:
        """The oldest waiting items that length ordering looks at, with those whose every
        waiting request has timed out answered and removed. Work is O(window), not
        O(queue): with a long backlog this runs once per batch."""
        waiting = list(itertools.islice(self._queue, _LENGTH_WINDOW))
        now = time.monotonic()
        live = [p for p in waiting if p.deadline >= now]
        if len(live) < len(waiting):
            for pending in waiting:
                if pending.deadline < now:
                    pending.resolve(past_deadline_result())
            self._replace_head(len(waiting), live)
        return live

    def _replace_head(self, n: int, head: list[Pending]) -> None:
        """Put ``head`` in place of the queue's first ``n`` items."""
        for _ in range(n):
            self._queue.popleft()
        self._queue.extendleft(reversed(head))

    def _take_batch(self) -> list[Pending]:
        if self.order == "length" and len(self._queue) > 1:
            return self._take_by_length()
        return self._take_oldest()

    def _take_by_length(self) -> list[Pending]:
        """The oldest item (so none starves) plus the waiting items nearest to it in cost,
        while count <= max_batch_size, longest x count <= token budget, and real tokens
        stay at least ``_MIN_PADDING_EFFICIENCY`` of padded ones: a long item waits for
        no short ones to pad, and short ones are not padded to a long one's length."""
        waiting = self._window()
        if not waiting:
            return []
        ranked = sorted(range(len(waiting)), key=lambda i: waiting[i].cost)
        lo = hi = ranked.index(0)  # the oldest item's place in cost order
        anchor = longest = real = waiting[0].cost
        limit = self.settings.max_batch_size
        while hi - lo + 1 < limit:
            left = waiting[ranked[lo - 1]].cost if lo > 0 else None
            right = waiting[ranked[hi + 1]].cost if hi + 1 < len(ranked) else None
            if left is None and right is None:
                break
            take_left = right is None or (left is not None and anchor - left <= right - anchor)
            cost = left if take_left else right
            assert cost is not None
            new_longest = max(longest, cost)
            count = hi - lo + 2
            if new_longest * count > self.settings.max_batch_tokens:
                break
            if real + cost < _MIN_PADDING_EFFICIENCY * new_longest * count:
                break
            if take_left:
                lo -= 1
            else:
                hi += 1
            longest, real = new_longest, real + cost
        chosen = {id(waiting[ranked[i]]) for i in range(lo, hi + 1)}
        batch = [p for p in waiting if id(p) in chosen]  # all within the window, in order
        self._replace_head(len(waiting), [p for p in waiting if id(p) not in chosen])
        self._depth.set(len(self._queue))
        return batch

    def _take_oldest(self) -> list[Pending]:
        """Oldest first, while count <= max_batch_size and longest x count <= token budget."""
        batch: list[Pending] = []
        longest = 0
        now = time.monotonic()
        while self._queue and len(batch) < self.settings.max_batch_size:
            candidate = self._queue[0]
            if candidate.deadline < now:  # every request waiting for it has timed out
                self._queue.popleft().resolve(past_deadline_result())
                continue
            new_longest = max(longest, candidate.cost)
            if batch and new_longest * (len(batch) + 1) > self.settings.max_batch_tokens:
                break
            batch.append(self._queue.popleft())
            longest = new_longest
        self._depth.set(len(self._queue))
        return batch

    async def _loop(self) -> None:
        """Continuous batching: the next batch is formed when a slot is free to run it,
        from everything queued by then (up to the count and token budget), so items that
        arrive while batches run wait for the next free slot and fill it, however small
        the requests that brought them. An idle scorer starts at once; ``max_wait_ms`` > 0
        makes only an idle one linger for company."""
        linger_s = self.settings.max_wait_ms / 1000
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            if linger_s > 0 and not self._running:
                await self._linger(linger_s)
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _linger(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for a full batch (only when nothing is running)."""
        deadline = time.perf_counter() + wait_s
        while len(self._queue) < self.settings.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # 3.10: not builtin
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    async def _run(self, batch: list[Pending]) -> None:
        # This task's own context: scorers read the batch deadline between items.
        BATCH_DEADLINE.set(max(p.deadline for p in batch))
        try:
            now = time.perf_counter()
            name = self.scorer.name
            observe_many(self._queue_wait, [now - p.enqueued for p in batch])
            self._batch_size.observe(len(batch))
            padded = max(p.cost for p in batch) * len(batch)
            self._batch_tokens.observe(padded)
            self._padding.observe(sum(p.cost for p in batch) / padded)
            results = await self._score(batch)
            self._compute.observe(time.perf_counter() - now)
            for pending, result in zip(batch, results, strict=True):
                if result.error is not None:
                    self.metrics.scorer_errors.labels(name, result.error_type).inc()
                reason = result.reason or ""
                if (
                    result.error_type in ("timeout", "verifier_timeout")
                    or reason.startswith("timeout")
                    or ("timed out" in reason)
                ):
                    self.metrics.scorer_timeouts.labels(name).inc()
                pending.resolve(result)
        except BaseException as exc:  # never leave a waiter hanging
            cancelled = isinstance(exc, asyncio.CancelledError)
            for pending in batch:
                pending.resolve(
                    ScoreResult.failed("server shutting down", "shutdown")
                    if cancelled
                    else ScoreResult.failed(f"internal error: {type(exc).__name__}", "internal")
                )
            if not isinstance(exc, Exception):
                raise
            log.exception("batch of scorer %s failed", self.scorer.name)
        finally:
            self._slots.release()

    async def _score(self, batch: list[Pending]) -> list[ScoreResult]:
        items = [p.item for p in batch]
        try:
            if any(p.prepared is None for p in batch):
                results = await self.scorer.score_batch(items)
            else:
                prepared = [p.prepared for p in batch if p.prepared is not None]
                results = await self.scorer.score_prepared(items, prepared)
        except Exception as exc:
            if len(items) == 1:
                log.warning("scorer %s failed on item %s: %r", self.scorer.name, items[0].id, exc)
                return [ScoreResult.failed(f"{type(exc).__name__}: {exc}")]
            # Isolate the item(s) that raise: score each alone.
            singles = await asyncio.gather(*(self._score([p]) for p in batch))
            return [r[0] for r in singles]
        if len(results) != len(items):
            message = (
                f"batch size mismatch: scorer {self.scorer.name!r} returned {len(results)} "
                f"results for {len(items)} items"
            )
            log.error(message)
            return [ScoreResult.failed(message, "internal") for _ in items]
        return list(results)
