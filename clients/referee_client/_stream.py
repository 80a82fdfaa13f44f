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

from referee_client._core import (
    ClientCore,
    ItemLike,
    RequestTooLargeError,
    as_items,
    plan_chunks,
)
from referee_client.errors import (
    APIConnectionError,
    APIStatusError,
    PayloadTooLargeError,
    is_retryable,
)
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
        models = as_items(items)  # bad items (metadata that is not JSON) are refused here
        clash = sorted(m.id for m in models if m.id in self._pending)
        if clash:
            raise ValueError(f"ids already pending in this stream: {clash[:10]}")
        chunks = plan_chunks(models, await self._core.chunk_size())
        max_bytes = await self._core.max_bytes()
        for n, chunk in enumerate(chunks):
            request = RewardRequest(
                pipeline=self._pipeline, items=[models[i] for i in chunk], options=self._options
            )
            # a failure here un-marks what was not sent, so no id waits for an answer
            # that can never come
            self._pending.update(m.id for m in request.items)
            try:
                if self._grpc is not None:
                    await self._over_grpc(request, max_bytes)
                else:
                    task = asyncio.create_task(self._over_http(request, max_bytes))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except BaseException:
                self._pending.difference_update(models[i].id for c in chunks[n:] for i in c)
                raise

    async def _over_grpc(self, request: RewardRequest, max_bytes: int | None) -> None:
        """One message, or (over the server's byte limit) halves of it; an item too
        large alone is answered here with the server's error instead of ending the stream."""
        assert self._grpc is not None
        try:
            await self._grpc.send(request, max_bytes=max_bytes)
        except RequestTooLargeError:
            if len(request.items) == 1:
                message = f"the item is over the server's limit of {max_bytes} bytes"
                self._answer_with_error(request, "payload_too_large", message)
                return
            half = len(request.items) // 2
            for part in (request.items[:half], request.items[half:]):
                await self._over_grpc(request.model_copy(update={"items": part}), max_bytes)

    async def _over_http(self, request: RewardRequest, max_bytes: int | None) -> None:
        deadline = self._core.deadline(None)
        try:
            self._inbox.put_nowait(
                await self._core.send(
                    request.items, request.pipeline, request.options, deadline, max_bytes
                )
            )
        except Exception as exc:  # the whole message failed: each item says why
            if isinstance(exc, PayloadTooLargeError) and len(request.items) > 1:
                half = len(request.items) // 2  # one item too large: the others still count
                for part in (request.items[:half], request.items[half:]):
                    await self._over_http(request.model_copy(update={"items": part}), max_bytes)
                return
            kind = exc.type if isinstance(exc, APIStatusError) and exc.type else "client_error"
            self._answer_with_error(
                request, kind, str(exc) or type(exc).__name__, retryable=is_retryable(exc)
            )

    def _answer_with_error(
        self, request: RewardRequest, kind: str, message: str, *, retryable: bool = False
    ) -> None:
        # The request as a whole failed: its items were never judged.
        error = ItemError(type=kind, message=message, retryable=retryable)
        results = [
            RewardResult(id=item.id, outcome="failed", reward=None, error=error)
            for item in request.items
        ]
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
