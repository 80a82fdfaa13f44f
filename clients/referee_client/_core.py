"""The async engine of both clients: item checks, chunking under the server's limits,
the concurrency limit, retries with backoff. Transports only move one request."""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from referee_client.errors import APIStatusError, APITimeoutError, RefereeError, is_retryable
from referee_client.schema import (
    RewardItem,
    RewardOptions,
    RewardRequest,
    RewardResponse,
    RewardResult,
    ServerLimits,
    Usage,
)

__all__ = ["ClientCore", "ClientSettings", "ItemLike", "RequestTooLargeError", "plan_chunks"]

ItemLike = RewardItem | Mapping[str, Any]
T = TypeVar("T")
FALLBACK_CHUNK = 1000  # when the server does not publish its limits
MAX_SERVER_TIMEOUT_S = 3600.0  # RewardOptions.timeout_s's bound


def server_timeout(remaining: float) -> float:
    """The server-side deadline for an attempt with ``remaining`` seconds left: a little
    less, so the server's 504 (a clear message) arrives before the transport gives up."""
    return min(MAX_SERVER_TIMEOUT_S, remaining - min(0.5, remaining * 0.2))


class RequestTooLargeError(Exception):
    """Raised by a transport before sending: the encoded request is over the server's
    byte limit, so the core splits it. Never leaves the SDK."""


class Transport(Protocol):
    async def score(
        self, request: RewardRequest, *, timeout: float | None, max_bytes: int | None
    ) -> RewardResponse: ...

    async def limits(self, *, timeout: float | None) -> ServerLimits | None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class ClientSettings:
    base_url: str
    api_key: str | None
    timeout: float
    max_retries: int
    chunk_size: int
    max_concurrency: int
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    # Rounds of sending again the items that came back failed and retryable (with the
    # other items of their groups, so group-relative rewards see whole groups).
    retry_failed_items: int = 0


def as_items(items: Sequence[ItemLike] | ItemLike) -> list[RewardItem]:
    """Items as models, refusing bad ones and duplicate ids with the index and field."""
    if isinstance(items, RewardItem | Mapping):
        items = [items]
    out: list[RewardItem] = []
    for i, item in enumerate(items):
        if isinstance(item, RewardItem):
            out.append(item)
            continue
        try:
            out.append(RewardItem.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
            item_id = item.get("id")
            named = f" (item id {item_id!r})" if isinstance(item_id, str) else ""
            raise ValueError(
                f"items[{i}]{where}: {first['msg'].removeprefix('Value error, ')}{named}"
            ) from None
    counts = collections.Counter(item.id for item in out)
    dups = sorted(item_id for item_id, n in counts.items() if n > 1)
    if dups:
        raise ValueError(f"item ids must be unique within a call; duplicated: {dups[:10]}")
    return out


def plan_chunks(items: Sequence[RewardItem], size: int) -> list[list[int]]:
    """Indices of items per request, at most ``size`` each. Items of one ``group`` stay in
    one request (group normalisation needs the whole group) unless the group alone is
    larger than ``size``; ungrouped items fill the gaps in their order."""
    buckets: dict[str, list[int]] = {}
    order: list[list[int]] = []
    for i, item in enumerate(items):
        if item.group is None:
            order.append([i])
        elif item.group in buckets:
            buckets[item.group].append(i)
        else:
            buckets[item.group] = [i]
            order.append(buckets[item.group])
    chunks: list[list[int]] = []
    current: list[int] = []
    for bucket in order:
        if current and len(current) + len(bucket) > size:
            chunks.append(current)
            current = []
        while len(bucket) > size:  # a group larger than a request: split it
            chunks.append(bucket[:size])
            bucket = bucket[size:]
        current = current + bucket
    if current:
        chunks.append(current)
    return chunks


def combine(parts: Sequence[RewardResponse], results: list[RewardResult]) -> RewardResponse:
    """One response from the responses of a call's requests (results already in order)."""
    return RewardResponse(
        pipeline=parts[0].pipeline,
        pipeline_version=parts[0].pipeline_version,
        results=results,
        usage=Usage(
            items=sum(p.usage.items for p in parts),
            cache_hits=sum(p.usage.cache_hits for p in parts),
            errors=sum(p.usage.errors for p in parts),
        ),
    )


class ClientCore:
    def __init__(self, settings: ClientSettings, transport: Transport) -> None:
        self.settings = settings
        self.transport = transport
        self._slots: asyncio.Semaphore | None = None
        self._limits: ServerLimits | None = None
        self._limits_known = False

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # created in the loop that uses it
            self._slots = asyncio.Semaphore(self.settings.max_concurrency)
        return self._slots

    def deadline(self, timeout: float | None) -> float:
        """The loop time by which a call started now must end (its timeout, or the client's)."""
        budget = timeout if timeout is not None else self.settings.timeout
        return asyncio.get_running_loop().time() + budget

    async def limits(self, deadline: float | None = None) -> ServerLimits | None:
        """The server's published limits (asked once), or None for a server without them."""
        if not self._limits_known:
            self._limits = await self._retrying(
                lambda remaining: self.transport.limits(timeout=remaining),
                self.deadline(None) if deadline is None else deadline,
            )
            self._limits_known = True
        return self._limits

    async def chunk_size(self, deadline: float | None = None) -> int:
        limits = await self.limits(deadline)
        if limits is None:
            return min(self.settings.chunk_size, FALLBACK_CHUNK)
        return max(1, min(self.settings.chunk_size, limits.max_items_per_request))

    async def max_bytes(self, deadline: float | None = None) -> int | None:
        limits = await self.limits(deadline)
        return limits.max_request_bytes if limits is not None else None

    async def score(
        self,
        items: Sequence[ItemLike] | ItemLike,
        *,
        pipeline: str,
        options: RewardOptions,
        timeout: float | None,
    ) -> RewardResponse:
        deadline = self.deadline(timeout)  # one for the whole call, retries included
        models = as_items(items)
        if not models:
            raise ValueError("items is empty: give at least one item")
        parts, results = await self._score_once(models, pipeline, options, deadline)
        loop = asyncio.get_running_loop()
        for attempt in range(self.settings.retry_failed_items):
            again = _failed_retryable_with_groups(models, results)
            if not again:
                break
            delay = self.backoff(attempt, RefereeError("failed items"))
            if loop.time() + delay >= deadline:
                break  # no time for another round: the failed items stay failed
            await asyncio.sleep(delay)
            _, retried = await self._score_once(
                [models[i] for i in again], pipeline, options, deadline
            )
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        if self.settings.retry_failed_items:
            errors = sum(1 for r in results if r.outcome != "scored")
            usage = Usage(items=len(results), cache_hits=sum(r.cached for r in results),
                          errors=errors)  # fmt: skip
            return combine(parts, results).model_copy(update={"usage": usage})
        return combine(parts, results)

    async def _score_once(
        self, models: list[RewardItem], pipeline: str, options: RewardOptions, deadline: float
    ) -> tuple[list[RewardResponse], list[RewardResult]]:
        chunks = plan_chunks(models, await self.chunk_size(deadline))
        max_bytes = await self.max_bytes(deadline)
        parts = await asyncio.gather(
            *(
                self.send([models[i] for i in chunk], pipeline, options, deadline, max_bytes)
                for chunk in chunks
            )
        )
        placed: list[RewardResult | None] = [None] * len(models)
        for chunk, part in zip(chunks, parts, strict=True):
            for i, result in zip(chunk, part.results, strict=True):
                placed[i] = result
        results = [r for r in placed if r is not None]
        if len(results) != len(models):  # a server bug; never hand back a short list
            raise RefereeError(f"the server answered {len(results)} of {len(models)} items")
        return list(parts), results

    async def send(
        self,
        items: list[RewardItem],
        pipeline: str,
        options: RewardOptions,
        deadline: float,
        max_bytes: int | None,
    ) -> RewardResponse:
        def attempt(remaining: float) -> Awaitable[RewardResponse]:
            # the server stops working for us when we stop waiting (or sooner, if asked)
            limit = server_timeout(remaining)
            if options.timeout_s is None or options.timeout_s > limit:
                bounded = options.model_copy(update={"timeout_s": limit})
            else:
                bounded = options
            request = RewardRequest(pipeline=pipeline, items=items, options=bounded)
            return self.transport.score(request, timeout=remaining, max_bytes=max_bytes)

        try:
            return await self._retrying(attempt, deadline)
        except RequestTooLargeError:  # over the byte limit: halves, each checked again
            half = len(items) // 2
            left, right = await asyncio.gather(
                self.send(items[:half], pipeline, options, deadline, max_bytes),
                self.send(items[half:], pipeline, options, deadline, max_bytes),
            )
            return combine([left, right], left.results + right.results)

    async def _retrying(self, call: Callable[[float], Awaitable[T]], deadline: float) -> T:
        """``call(seconds left)`` under the concurrency limit, retried while safe and while
        the call's deadline allows: waiting for a slot, attempts and backoff all count."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                try:
                    await asyncio.wait_for(self.slots.acquire(), deadline - loop.time())
                except asyncio.TimeoutError:
                    raise APITimeoutError("the call's timeout ran out waiting for a free "
                                          "request slot (max_concurrency)") from None  # fmt: skip
                try:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise APITimeoutError("the call's timeout ran out before it was sent")
                    return await call(remaining)
                finally:
                    self.slots.release()
            except RefereeError as exc:
                if attempt >= self.settings.max_retries or not is_retryable(exc):
                    raise
                delay = self.backoff(attempt, exc)
                if loop.time() + delay >= deadline:  # no time left for another attempt
                    if isinstance(exc, APITimeoutError):
                        raise
                    raise APITimeoutError(
                        f"the call's timeout ran out after {attempt + 1} attempts; last: {exc}"
                    ) from exc
                await asyncio.sleep(delay)
                attempt += 1

    def backoff(self, attempt: int, exc: RefereeError) -> float:
        """Retry-After when the server gave one (up to a minute), else capped exponential
        backoff with jitter, so many clients refused at once do not come back at once."""
        retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
        if retry_after is not None and retry_after <= 60:
            return retry_after
        delay = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * 2**attempt)
        return delay * (0.5 + random.random() / 2)

    async def aclose(self) -> None:
        await self.transport.aclose()


def _failed_retryable_with_groups(
    items: Sequence[RewardItem], results: Sequence[RewardResult]
) -> list[int]:
    """Indices of the items that failed retryably, and of every item sharing a group with
    one: a group-normalised reward is only right when the whole group is scored together."""
    failed = {i for i, r in enumerate(results) if r.retryable}
    groups = {items[i].group for i in failed if items[i].group is not None}
    return [i for i, item in enumerate(items) if i in failed or item.group in groups]
