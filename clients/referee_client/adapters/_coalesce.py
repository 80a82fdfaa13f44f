"""Micro-batching inside a trainer process: per-item reward calls that happen at the same
time (verl's reward loop awaits one ``compute_score`` per rollout, all at once) become a
few batched requests instead of one request each.

The first item opens a window (``window_s``); every item awaited in it joins, and the
batch goes out when the window closes or it holds ``max_items``. Each caller gets its own
item's result. One coalescer per event loop: a client and its connections belong to the
loop that made them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from referee_client.client import AsyncRewardClient
from referee_client.schema import RewardItem, RewardOptions, RewardResult

__all__ = ["Coalescer"]


@dataclass
class _Batch:
    items: list[RewardItem] = field(default_factory=list)
    answers: list[asyncio.Future[RewardResult]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    sent: bool = False


class Coalescer:
    def __init__(self, client: AsyncRewardClient, *, pipeline: str,
                 options: RewardOptions | None = None, window_s: float = 0.005,
                 max_items: int = 512) -> None:  # fmt: skip
        if window_s < 0 or max_items < 1:
            raise ValueError("window_s must be >= 0 and max_items >= 1")
        self.client = client
        self.pipeline = pipeline
        self.options = options
        self.window_s = window_s
        self.max_items = max_items
        self._open: _Batch | None = None
        self._sent: set[asyncio.Task[None]] = set()
        self.requests = 0  # batches sent (for tests and logs)

    async def score(self, item: RewardItem) -> RewardResult:
        """This item's result, scored in a batch with the items awaited around it."""
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            batch.timer = loop.call_later(self.window_s, self._flush, batch)
        answer: asyncio.Future[RewardResult] = loop.create_future()
        # ids are unique within a request: the position stands in for the caller's id
        batch.items.append(item.model_copy(update={"id": str(len(batch.items))}))
        batch.answers.append(answer)
        if len(batch.items) >= self.max_items:
            self._flush(batch)
        result = await answer
        return result.model_copy(update={"id": item.id})

    def _flush(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if batch.sent or not batch.items:
            return
        batch.sent = True
        task = asyncio.ensure_future(self._send(batch))
        self._sent.add(task)
        task.add_done_callback(self._sent.discard)

    async def _send(self, batch: _Batch) -> None:
        self.requests += 1
        try:
            response = await self.client.score(
                batch.items, pipeline=self.pipeline, options=self.options
            )
        except Exception as exc:
            for answer in batch.answers:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for answer, result in zip(batch.answers, response.results, strict=True):
            if not answer.done():
                answer.set_result(result)
