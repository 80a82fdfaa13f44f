"""``referee.v1.Referee``: proto in, ``engine.score``, proto out; errors through GRPC_STATUS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc
from pydantic import ValidationError

from referee.engine import RewardEngine
from referee.errors import GRPC_STATUS, ErrorKind, RefereeError, from_validation_error
from referee.gateway import check_api_key, server_limits
from referee.metrics import Metrics
from referee_client import _convert as convert
from referee_client._proto import referee_pb2 as pb
from referee_client._proto import referee_pb2_grpc as pb_grpc
from referee_client.schema import ErrorDetail, RewardRequest

__all__ = ["ERROR_METADATA_KEY", "RefereeServicer"]

log = logging.getLogger(__name__)

ERROR_METADATA_KEY = "referee-error-bin"  # a serialized referee.v1.ErrorDetail
STREAM_MESSAGES_IN_FLIGHT = 64  # per stream; beyond this the server stops reading (backpressure)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {
        key: value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }  # fmt: skip


class RefereeServicer(pb_grpc.RefereeServicer):
    def __init__(self, engine: RewardEngine, metrics: Metrics, api_keys: list[str]) -> None:
        self.engine = engine
        self.metrics = metrics
        self.api_keys = api_keys

    # -- rpcs -----------------------------------------------------------------------------
    async def Score(
        self, request: pb.RewardRequest, context: grpc.aio.ServicerContext
    ) -> pb.RewardResponse:
        try:
            self._authorize(context)
        except RefereeError as exc:
            self._count("Score", "?", GRPC_STATUS[exc.kind], time.perf_counter())
            await self._abort(context, exc)
        try:
            return await self._scored("Score", request)
        except RefereeError as exc:
            await self._abort(context, exc)
        raise AssertionError("unreachable: context.abort raises")

    async def ScoreStream(
        self,
        request_iterator: AsyncIterator[pb.RewardRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.RewardResponse]:
        try:
            self._authorize(context)
        except RefereeError as exc:
            self._count("ScoreStream", "?", GRPC_STATUS[exc.kind], time.perf_counter())
            await self._abort(context, exc)
        # bounded, and a slot is freed only once its answer is queued: a client that sends
        # but does not read stops the server reading instead of making it buffer everything
        answers: asyncio.Queue[pb.RewardResponse | None] = asyncio.Queue(
            maxsize=STREAM_MESSAGES_IN_FLIGHT
        )
        slots = asyncio.Semaphore(STREAM_MESSAGES_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        async def answer(message: pb.RewardRequest) -> None:
            try:
                await answers.put(await self._score_message(message))
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for message in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(message))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.gather(*running)
            except asyncio.CancelledError:
                raise  # the writer is gone: nobody to wake (and the queue may be full)
            except BaseException:
                await answers.put(None)  # wake the writer, which surfaces the failure
                raise
            await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await answers.get()) is not None:
                yield response
            await reader  # surfaces a failure of the request stream itself
        finally:
            for task in (reader, *running):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(reader, *running, return_exceptions=True)

    async def GetLimits(
        self, request: pb.LimitsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLimits:
        try:
            self._authorize(context)
        except RefereeError as exc:
            await self._abort(context, exc)
        return convert.limits_to_proto(server_limits(self.engine.settings.server))

    # -- helpers ---------------------------------------------------------------------------
    async def _score_message(self, message: pb.RewardRequest) -> pb.RewardResponse:
        """One stream message scored as one request; a request-level failure becomes an
        inline error on each of its items, so every id is still answered exactly once."""
        try:
            return await self._scored("ScoreStream", message)
        except RefereeError as exc:
            return _failed_message(message, exc)

    async def _scored(self, method: str, message: pb.RewardRequest) -> pb.RewardResponse:
        """Validate, score with the engine, count; every failure as a RefereeError."""
        started = time.perf_counter()
        pipeline, code = "?", "INTERNAL"
        try:
            reward_request = self._parse(message)
            pipeline = self._label(reward_request.pipeline)
            response = await self.engine.score(reward_request)
            code = "OK"
            return convert.response_to_proto(response)
        except RefereeError as exc:
            code = GRPC_STATUS[exc.kind]
            raise
        except Exception as exc:
            log.exception("unhandled error in %s", method)
            raise _internal(exc) from exc
        finally:
            self._count(method, pipeline, code, started)

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        metadata = _metadata(context)
        check_api_key(
            self.api_keys,
            api_key=metadata.get("x-api-key"),
            authorization=metadata.get("authorization"),
        )

    def _parse(self, message: pb.RewardRequest) -> RewardRequest:
        max_bytes = self.engine.settings.server.max_request_bytes
        size = message.ByteSize()
        if size > max_bytes:  # the same limit as an HTTP body
            raise RefereeError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"the request is {size} bytes; the limit is {max_bytes}: split the request",
                param="items",
            )
        limit = self.engine.settings.server.max_items_per_request
        if len(message.items) > limit:  # refuse before validating a huge request
            raise RefereeError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"{len(message.items)} items in one request; the limit is {limit}: "
                "split the request",
                param="items",
            )
        try:
            return RewardRequest.model_validate(convert.request_from_proto(message))
        except ValidationError as exc:
            raise from_validation_error(exc) from None

    def _label(self, pipeline: str) -> str:
        return pipeline if pipeline in self.engine.pipelines else "?"

    def _count(self, method: str, pipeline: str, code: str, started: float) -> None:
        self.metrics.grpc_requests.labels(method, pipeline, code).inc()
        self.metrics.grpc_latency.labels(method, code).observe(time.perf_counter() - started)

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, exc: RefereeError) -> None:
        detail = ErrorDetail(type=exc.kind.value, message=exc.message, param=exc.param)
        trailing: list[tuple[str, str | bytes]] = [
            (ERROR_METADATA_KEY, convert.error_detail_to_proto(detail).SerializeToString())
        ]
        if exc.retry_after_s is not None:
            trailing.append(("retry-after", str(max(1, round(exc.retry_after_s)))))
        message = f"{exc.message} (param: {exc.param})" if exc.param else exc.message
        await context.abort(grpc.StatusCode[GRPC_STATUS[exc.kind]], message, tuple(trailing))


def _internal(exc: Exception) -> RefereeError:
    return RefereeError(ErrorKind.INTERNAL, f"internal error ({type(exc).__name__}); see logs")


def _failed_message(message: pb.RewardRequest, exc: RefereeError) -> pb.RewardResponse:
    text = f"{exc.message} (param: {exc.param})" if exc.param else exc.message
    out = pb.RewardResponse(pipeline=message.pipeline or "default")
    for item in message.items:
        result = out.results.add(id=item.id)
        result.error.type = exc.kind.value
        result.error.message = text
    out.usage.items = out.usage.errors = len(message.items)
    return out
