"""``RewardClient`` (blocking) and ``AsyncRewardClient`` over one base.

    from referee_client import RewardClient
    client = RewardClient("http://referee:8000")          # or "grpc://referee:50051"
    response = client.score(items, pipeline="math_rl")   # one result per item, in order

Both share one async core (chunking, concurrency limit, retries); the blocking client
runs it on a private event-loop thread, so ``submit`` can hand back plain
``concurrent.futures`` while the trainer keeps generating.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from referee_client._admin import Admin, AsyncAdmin
from referee_client._core import ClientCore, ClientSettings, ItemLike, Transport
from referee_client._stream import AsyncRewardStream
from referee_client.errors import APIConnectionError
from referee_client.schema import RewardOptions, RewardResponse, RewardResult, ServerLimits

__all__ = ["AsyncRewardClient", "AsyncRewardStream", "RewardClient", "RewardStream"]

T = TypeVar("T")
SCHEMES = ("http", "https", "grpc", "grpcs")
OptionsLike = RewardOptions | Mapping[str, Any] | None


class _BaseClient:
    """Configuration and transport choice, shared by both clients.

    ``base_url`` (or ``$REFEREE_URL``): ``http(s)://host:port`` for HTTP, ``grpc://`` or
    ``grpcs://host:port`` for gRPC (needs ``pip install referee[grpc]``). ``api_key``
    (or ``$REFEREE_API_KEY``) is sent as ``Authorization: Bearer``. ``timeout`` is one
    deadline per call, retries included, and the time left is sent as each attempt's
    server-side deadline; ``max_retries`` applies to
    connection errors, timeouts and 408/429/503/504 only; ``chunk_size`` caps items per
    request (the server's own limit applies too); ``max_concurrency`` caps requests in
    flight; ``admin_key`` (or ``$REFEREE_ADMIN_KEY``) is for ``client.admin`` only (live
    reloads): the server's admin keys are separate from its API keys.
    ``retry_failed_items`` is how many rounds the items that come back ``failed``
    and ``retryable`` (a verifier timed out or was overloaded) are sent again, with the
    rest of their groups, while the call's deadline allows (0: never; they stay failed).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        chunk_size: int = 1024,
        max_concurrency: int = 8,
        admin_key: str | None = None,
        retry_failed_items: int = 0,
    ) -> None:
        url = base_url or os.environ.get("REFEREE_URL")
        if not url:
            raise ValueError("give base_url (e.g. 'http://127.0.0.1:8000') or set REFEREE_URL")
        scheme = urlsplit(url).scheme
        if scheme not in SCHEMES:
            raise ValueError(
                f"base_url must start with http://, https://, grpc:// or grpcs://; got {url!r}"
            )
        for name, value in (
            ("timeout", timeout),
            ("chunk_size", chunk_size),
            ("max_concurrency", max_concurrency),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0; got {value!r}")
        for name, count in (
            ("max_retries", max_retries),
            ("retry_failed_items", retry_failed_items),
        ):
            if count < 0:
                raise ValueError(f"{name} must be >= 0; got {count!r}")
        self.base_url = url
        self.settings = ClientSettings(
            base_url=url,
            api_key=api_key or os.environ.get("REFEREE_API_KEY"),
            timeout=timeout,
            max_retries=max_retries,
            chunk_size=chunk_size,
            max_concurrency=max_concurrency,
            retry_failed_items=retry_failed_items,
        )
        self._core = ClientCore(self.settings, self._transport())
        self._admin = AsyncAdmin(url, admin_key, timeout)

    def _transport(self) -> Transport:
        parts = urlsplit(self.base_url)
        key = self.settings.api_key
        if parts.scheme in ("grpc", "grpcs"):
            from referee_client._grpc import GrpcTransport  # only gRPC users need grpcio

            metadata = (("authorization", f"Bearer {key}"),) if key else ()
            return GrpcTransport(parts.netloc, secure=parts.scheme == "grpcs", metadata=metadata)
        from referee_client._http import HttpTransport

        headers = {"authorization": f"Bearer {key}"} if key else {}
        return HttpTransport(self.base_url, headers, self.settings.max_concurrency)

    def _scoring(
        self, items: Sequence[ItemLike] | ItemLike, pipeline: str, options: OptionsLike,
        timeout: float | None,
    ) -> Coroutine[Any, Any, RewardResponse]:  # fmt: skip
        return self._core.score(
            items, pipeline=pipeline, options=self._options(options), timeout=timeout
        )

    @staticmethod
    def _options(options: OptionsLike) -> RewardOptions:
        if options is None:
            return RewardOptions()
        if isinstance(options, RewardOptions):
            return options
        return RewardOptions.model_validate(options)


class AsyncRewardClient(_BaseClient):
    async def score(
        self,
        items: Sequence[ItemLike] | ItemLike,
        *,
        pipeline: str = "default",
        options: OptionsLike = None,
        timeout: float | None = None,
    ) -> RewardResponse:
        """Score items with a pipeline: one result per item, in order. Large batches are
        split under the server's limits and sent concurrently."""
        return await self._scoring(items, pipeline, options, timeout)

    def submit(
        self,
        items: Sequence[ItemLike] | ItemLike,
        *,
        pipeline: str = "default",
        options: OptionsLike = None,
        timeout: float | None = None,
    ) -> asyncio.Task[RewardResponse]:
        """Start scoring now and return at once; await the task when the rewards are needed."""
        return asyncio.ensure_future(self._scoring(items, pipeline, options, timeout))

    def stream(
        self, *, pipeline: str = "default", options: OptionsLike = None
    ) -> AsyncRewardStream:
        """``async with client.stream(pipeline=...) as s: await s.send(items); ...;
        await s.close_send(); async for result in s: ...``"""
        return AsyncRewardStream(self._core, pipeline=pipeline, options=self._options(options))

    async def limits(self) -> ServerLimits | None:
        return await self._core.limits()

    @property
    def admin(self) -> AsyncAdmin:
        """Live reloads: ``await client.admin.reload_scorer(name, options=...)``,
        ``apply_config(...)``, ``scorers()`` (needs ``admin_key``)."""
        return self._admin

    async def aclose(self) -> None:
        await self._admin.aclose()
        await self._core.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _LoopThread:
    """An event loop on a daemon thread, for the blocking client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="referee-client", daemon=True
        )
        self.thread.start()
        self.closing = False

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self.closing:
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(self._until_closed(coro), self.loop)

    async def _until_closed(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await coro
        except asyncio.CancelledError:
            if self.closing:  # the caller's future gets a reason, not a bare cancellation
                raise APIConnectionError(
                    "the client was closed before this call finished"
                ) from None
            raise

    def shutdown(self, finish: Coroutine[Any, Any, None]) -> None:
        """Cancel every call in flight (their futures fail with APIConnectionError), run
        ``finish`` (closing the transport), stop the loop. Safe to call twice."""
        if self.closing:
            finish.close()
            return
        self.closing = True

        async def cancel_all() -> None:
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await finish

        try:
            if self.loop.is_running():
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=30)
        finally:
            self.stop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class RewardClient(_BaseClient):
    __doc__ = _BaseClient.__doc__

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._loop = _LoopThread()
        self._admin_sync = Admin(self._admin, self._loop.run)

    def score(
        self,
        items: Sequence[ItemLike] | ItemLike,
        *,
        pipeline: str = "default",
        options: OptionsLike = None,
        timeout: float | None = None,
    ) -> RewardResponse:
        """Score items with a pipeline: one result per item, in order (blocks)."""
        return self._loop.run(self._scoring(items, pipeline, options, timeout))

    def submit(
        self,
        items: Sequence[ItemLike] | ItemLike,
        *,
        pipeline: str = "default",
        options: OptionsLike = None,
        timeout: float | None = None,
    ) -> concurrent.futures.Future[RewardResponse]:
        """Start scoring in the background; ``.result()`` when the rewards are needed."""
        return self._loop.submit(self._scoring(items, pipeline, options, timeout))

    def stream(self, *, pipeline: str = "default", options: OptionsLike = None) -> RewardStream:
        """``with client.stream(pipeline=...) as s: s.send(items); ...; s.close_send();
        for result in s: ...``"""
        inner = AsyncRewardStream(self._core, pipeline=pipeline, options=self._options(options))
        return RewardStream(inner, self._loop)

    def limits(self) -> ServerLimits | None:
        return self._loop.run(self._core.limits())

    @property
    def admin(self) -> Admin:
        """Live reloads: ``client.admin.reload_scorer(name, options=...)``,
        ``apply_config(...)``, ``scorers()`` (needs ``admin_key``)."""
        return self._admin_sync

    def close(self) -> None:
        """Stop: calls still running (``submit`` futures included) fail with
        APIConnectionError; the connection and the loop thread end. Idempotent."""

        async def finish() -> None:
            await self._admin.aclose()
            await self._core.aclose()

        self._loop.shutdown(finish())

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RewardStream:
    """The blocking face of ``AsyncRewardStream`` (same semantics)."""

    def __init__(self, inner: AsyncRewardStream, loop: _LoopThread) -> None:
        self._inner = inner
        self._loop = loop

    def __enter__(self) -> RewardStream:
        self._loop.run(self._inner.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.run(self._inner.aclose())

    @property
    def pending(self) -> int:
        return self._inner.pending

    def send(self, items: Sequence[ItemLike] | ItemLike) -> None:
        self._loop.run(self._inner.send(items))

    def close_send(self) -> None:
        self._loop.run(self._inner.close_send())

    def __iter__(self) -> Iterator[RewardResult]:
        while True:
            try:
                yield self._loop.run(self._inner.__anext__())
            except StopAsyncIteration:
                return
