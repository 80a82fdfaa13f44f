"""The gRPC transport (grpc.aio), imported only for grpc:// and grpcs:// URLs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from referee_client import _convert as convert
from referee_client._core import RequestTooLargeError
from referee_client._proto import referee_pb2 as pb
from referee_client._proto import referee_pb2_grpc as pb_grpc
from referee_client.errors import (
    TYPE_STATUS,
    APIConnectionError,
    APITimeoutError,
    RefereeError,
    error_for_status,
    parse_retry_after,
)
from referee_client.schema import RewardRequest, RewardResponse, ServerLimits

__all__ = ["GrpcStream", "GrpcTransport", "error_from_rpc"]

ERROR_METADATA_KEY = "referee-error-bin"

# For failures that carry no Referee error detail (raised by gRPC itself). The server
# sends its overload as RESOURCE_EXHAUSTED *with* a detail; a bare one is gRPC refusing a
# message over its size limit, which no retry can fix.
_CODE_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


def error_from_rpc(exc: grpc.aio.AioRpcError, target: str) -> RefereeError:
    trailing = {key: value for key, value in (exc.trailing_metadata() or ())}
    raw = trailing.get(ERROR_METADATA_KEY)
    if isinstance(raw, bytes):
        detail = convert.error_detail_from_proto(pb.ErrorDetail.FromString(raw))
        retry = trailing.get("retry-after")
        return error_for_status(
            TYPE_STATUS.get(detail.type, 500),
            detail.message,
            type=detail.type,
            param=detail.param,
            retry_after=parse_retry_after(retry if isinstance(retry, str) else None),
        )
    code = exc.code()
    if code is grpc.StatusCode.UNAVAILABLE:
        return APIConnectionError(f"cannot reach grpc://{target}: {exc.details()}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return APITimeoutError(f"no answer from grpc://{target} in time: {exc.details()}")
    return error_for_status(_CODE_STATUS.get(code, 500), f"{code.name}: {exc.details()}")


class GrpcTransport:
    def __init__(self, target: str, *, secure: bool, metadata: tuple[tuple[str, str], ...]) -> None:
        self.target = target
        self._secure = secure
        self._metadata = metadata
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.RefereeStub | None = None

    def stub(self) -> pb_grpc.RefereeStub:
        """Created on first use, inside the event loop that uses it (grpc.aio needs that)."""
        if self._stub is None:
            options = [
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
            ]
            if self._secure:
                credentials = grpc.ssl_channel_credentials()
                self._channel = grpc.aio.secure_channel(self.target, credentials, options=options)
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=options)
            self._stub = pb_grpc.RefereeStub(self._channel)
        return self._stub

    async def score(
        self, request: RewardRequest, *, timeout: float | None, max_bytes: int | None
    ) -> RewardResponse:
        message = convert.request_to_proto(request)
        if max_bytes is not None and len(request.items) > 1 and message.ByteSize() > max_bytes:
            raise RequestTooLargeError
        try:
            response = await self.stub().Score(message, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, self.target) from None
        return convert.response_from_proto(response)

    async def limits(self, *, timeout: float | None) -> ServerLimits | None:
        try:
            limits = await self.stub().GetLimits(
                pb.LimitsRequest(), timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, self.target) from None
        return convert.limits_from_proto(limits)

    def open_stream(
        self, deliver: Callable[[RewardResponse | BaseException | None], None]
    ) -> GrpcStream:
        return GrpcStream(self, deliver)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None


class GrpcStream:
    """One ScoreStream call: ``send`` writes a message; every response (or the call's
    failure) goes to ``deliver`` from a reader task."""

    def __init__(
        self,
        transport: GrpcTransport,
        deliver: Callable[[RewardResponse | BaseException | None], None],
    ) -> None:
        self._transport = transport
        self._deliver = deliver
        self._call = transport.stub().ScoreStream(metadata=transport._metadata)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self._call:
                self._deliver(convert.response_from_proto(message))
            self._deliver(None)
        except grpc.aio.AioRpcError as exc:
            self._deliver(error_from_rpc(exc, self._transport.target))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._deliver(exc)

    async def send(self, request: RewardRequest, *, max_bytes: int | None) -> None:
        """Write one message; RequestTooLargeError (nothing written) when it is over
        ``max_bytes``, so the caller splits it rather than the server ending the stream."""
        message = convert.request_to_proto(request)
        if max_bytes is not None and message.ByteSize() > max_bytes:
            raise RequestTooLargeError
        try:
            await self._call.write(message)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, self._transport.target) from None
        except asyncio.InvalidStateError:
            raise APIConnectionError("the stream has already ended") from None

    async def done_writing(self) -> None:
        try:
            await self._call.done_writing()
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, self._transport.target) from None

    async def aclose(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
