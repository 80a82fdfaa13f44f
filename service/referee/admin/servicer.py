"""``referee.v1.RefereeAdmin``: the admin API over gRPC, the same ``Reloader`` as HTTP,
behind the admin keys (``authorization: Bearer KEY`` metadata)."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from referee.admin.reload import Reloader
from referee.admin.routes import settings_from
from referee.errors import ErrorKind, RefereeError
from referee.gateway import check_api_key
from referee.grpc.servicer import RefereeServicer
from referee_client import _admin as convert
from referee_client._proto import referee_pb2 as pb
from referee_client._proto import referee_pb2_grpc as pb_grpc

__all__ = ["AdminServicer"]


class AdminServicer(pb_grpc.RefereeAdminServicer):
    def __init__(
        self, reloader: Reloader, admin_keys: list[str], overrides: dict[str, Any] | None = None
    ) -> None:
        self.reloader = reloader
        self.admin_keys = admin_keys
        self.overrides = overrides or {}

    async def ListScorers(
        self, request: pb.ListScorersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScorerList:
        try:
            self._authorize(context)
            from referee_client.schema import ScorerList

            return convert.scorers_to_proto(ScorerList(scorers=self.reloader.scorers()))
        except RefereeError as exc:
            await _abort(context, exc)

    async def ReloadScorer(
        self, request: pb.ReloadScorerCall, context: grpc.aio.ServicerContext
    ) -> pb.ReloadResult:
        try:
            self._authorize(context)
            name, body = convert.reload_call_from_proto(request)
            result = await self.reloader.reload_scorer(name, body.options, swap=body.swap)
            return convert.result_to_proto(result)
        except RefereeError as exc:
            await _abort(context, exc)
        except ValueError as exc:  # a pydantic error on the request (an unknown swap)
            await _abort(context, RefereeError(ErrorKind.INVALID_REQUEST, str(exc)))

    async def ApplyConfig(
        self, request: pb.ConfigApplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReloadResult:
        try:
            self._authorize(context)
            body = convert.config_from_proto(request)
            settings = settings_from(body.config, overrides=self.overrides)
            result = await self.reloader.apply_config(settings, swap=body.swap)
            return convert.result_to_proto(result)
        except RefereeError as exc:
            await _abort(context, exc)
        except ValueError as exc:
            await _abort(context, RefereeError(ErrorKind.INVALID_REQUEST, str(exc)))

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self.admin_keys:
            raise RefereeError(
                ErrorKind.NOT_FOUND, "the admin API is off: set server.admin_api_keys to use it"
            )
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        check_api_key(self.admin_keys, api_key=metadata.get("x-api-key"),
                      authorization=metadata.get("authorization"))  # fmt: skip


async def _abort(context: grpc.aio.ServicerContext, exc: RefereeError) -> NoReturn:
    await RefereeServicer._abort(context, exc)
    raise AssertionError("unreachable: context.abort raises")
