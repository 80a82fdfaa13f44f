"""The gRPC API through Ray Serve's gRPC proxy, served by the same servicer as the
embedded server: the proxy calls the ingress's `Score`/`ScoreStream`/`GetLimits` with a
Ray context, which this module makes look like a grpc.aio one (metadata in, abort as
status code + details + trailing metadata out)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, NoReturn

import grpc

from referee.grpc.servicer import RefereeServicer

__all__ = ["GRPC_SERVICER_FUNCTIONS", "RayGrpc"]

# What `serve.start(grpc_options=...)` needs to register the referee.v1 services.
GRPC_SERVICER_FUNCTIONS = [
    "referee_client._proto.referee_pb2_grpc.add_RefereeServicer_to_server",
    "referee_client._proto.referee_pb2_grpc.add_RefereeAdminServicer_to_server",
]


class _Aborted(Exception):
    """The call ended with a status set on the Ray context."""


class _Context:
    def __init__(self, ray_context: Any) -> None:
        self._ray = ray_context

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return list(self._ray.invocation_metadata() or ())

    async def abort(
        self, code: grpc.StatusCode, details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn:  # fmt: skip
        self._ray.set_code(code)
        self._ray.set_details(details)
        self._ray.set_trailing_metadata(list(trailing_metadata))
        raise _Aborted


class RayGrpc:
    """The ingress's gRPC methods, delegating to :class:`RefereeServicer` and, for the
    admin calls, to the admin servicer (the same ``Reloader`` as HTTP)."""

    def __init__(self, servicer: RefereeServicer, admin: Any = None) -> None:
        self.servicer = servicer
        self.admin = admin

    async def unary(self, method: str, request: Any, ray_context: Any) -> Any:
        from referee_client._proto import referee_pb2 as pb

        empty = {"GetLimits": pb.ServerLimits, "Score": pb.RewardResponse,
                 "ListScorers": pb.ScorerList, "ReloadScorer": pb.ReloadResult,
                 "ApplyConfig": pb.ReloadResult}[method]  # fmt: skip
        target = self.servicer if method in ("GetLimits", "Score") else self.admin
        try:
            return await getattr(target, method)(request, _Context(ray_context))
        except _Aborted:  # the status is on the context; the body is not read
            return empty()

    async def stream(self, requests: AsyncIterator[Any], ray_context: Any) -> AsyncIterator[Any]:
        try:
            async for response in self.servicer.ScoreStream(requests, _Context(ray_context)):
                yield response
        except _Aborted:
            return
