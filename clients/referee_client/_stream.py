"""``stream()``: push items as rollouts finish, get each result as soon as it is scored.

Over gRPC this is one ScoreStream call; over HTTP each ``send`` becomes its own request
(run concurrently under the client's limit). Either way every id sent is answered
exactly once, by a result or an inline per-item error, in any order.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from referee_client._core import ClientCore, ItemLike, as_items, plan_chunks
from referee_client.errors import APIConnectionError, APIStatusError, RefereeError
from referee_client.schema import (
    ItemError,
    RewardOptions,
    RewardRequest,
    RewardResponse,
    RewardResult,
    Usage,
)

if TYPE_CHECKING:
    from referee_client._grpc import GrpcStream

__all__ = ["AsyncRewardStream"]

Delivery = RewardResponse | BaseException | None  # None: the server ended the stream


class AsyncRewardStream:
    def __init__(self, core: ClientCore, *, pipeline: str, options: RewardOptions) -> None:
        self._core = core
        self._pipeline = pipeline
        self._options = options
        self._pending: set[str] = set()
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._ready: collections.deque[RewardResult] = collections.deque()
        self._sending = True
        self._ended = False
        self._grpc: GrpcStream | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AsyncRewardStream:
        open_stream = getattr(self._core.transport, "open_stream", None)
        if open_stream is not None:
            self._grpc = open_stream(self._inbox.put_nowait)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def pending(self) -> int:
        """Ids sent and not answered yet."""
        return len(self._pending)

    async def send(self, items: Sequence[ItemLike] | ItemLike) -> None:
        """Queue items for scoring. Items of one message are scored together (send a GRPO
        group in one call); ids must differ from every id still pending."""
        if not self._sending:
            raise RuntimeError("send() after close_send(): open a new stream")
        models = as_items(items)
        clash = sorted(m.id for m in models if m.id in self._pending)
        if clash:
            raise ValueError(f"ids already pending in this stream: {clash[:10]}")
        self._pending.update(m.id for m in models)
        for chunk in plan_chunks(models, await self._core.chunk_size()):
            request = RewardRequest(
                pipeline=self._pipeline, items=[models[i] for i in chunk], options=self._options
            )
            if self._grpc is not None:
                await self._grpc.send(request)
            else:
                task = asyncio.create_task(self._over_http(request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _over_http(self, request: RewardRequest) -> None:
        limits = await self._core.limits()
        max_bytes = limits.max_request_bytes if limits is not None else None
        timeout = self._core.settings.timeout
        try:
            self._inbox.put_nowait(
                await self._core.send(
                    request.items, request.pipeline, request.options, timeout, max_bytes
                )
            )
        except RefereeError as exc:  # the whole message failed: each item says why
            kind = exc.type if isinstance(exc, APIStatusError) and exc.type else "client_error"
            error = ItemError(type=kind, message=str(exc))
            results = [RewardResult(id=item.id, reward=None, error=error) for item in request.items]
            usage = Usage(items=len(results), cache_hits=0, errors=len(results))
            self._inbox.put_nowait(
                RewardResponse(
                    pipeline=request.pipeline, pipeline_version="", results=results, usage=usage
                )
            )

    async def close_send(self) -> None:
        """No more items: iteration ends once every pending id is answered."""
        if self._sending:
            self._sending = False
            if self._grpc is not None:
                await self._grpc.done_writing()

    def __aiter__(self) -> AsyncRewardStream:
        return self

    async def __anext__(self) -> RewardResult:
        while True:
            if self._ready:
                result = self._ready.popleft()
                self._pending.discard(result.id)
                return result
            if not self._pending and not self._sending:
                raise StopAsyncIteration
            if self._ended:
                raise APIConnectionError(
                    f"the stream ended with {len(self._pending)} ids unanswered"
                )
            delivery = await self._inbox.get()
            if delivery is None:
                self._ended = True
            elif isinstance(delivery, BaseException):
                self._ended = True
                raise delivery
            else:
                self._ready.extend(delivery.results)

    async def aclose(self) -> None:
        self._sending = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._grpc is not None:
            await self._grpc.aclose()
