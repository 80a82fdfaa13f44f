"""Start and stop the gRPC gateway next to HTTP, in the same event loop and engine:
``referee.v1.Referee``, standard health checking and server reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from referee.engine import RewardEngine
from referee.grpc.servicer import RefereeServicer
from referee.metrics import Metrics
from referee_client._proto import referee_pb2 as pb
from referee_client._proto import referee_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from referee.admin import Reloader

__all__ = ["SERVICE_NAME", "GrpcGateway", "start_grpc_gateway"]

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Referee"].full_name  # referee.v1.Referee
HEALTH_POLL_S = 0.1
# gRPC's own receive limit sits above max_request_bytes, so a message a little over the
# limit reaches the servicer and is refused as payload_too_large (413, not retried) with
# a Referee error detail, like HTTP; only far larger ones meet gRPC's bare refusal.
RECEIVE_MARGIN_BYTES = 1024 * 1024


class GrpcGateway:
    """A started grpc.aio server whose health follows the engine: SERVING once every
    scorer is warm, NOT_SERVING from the moment a shutdown begins."""

    def __init__(self, server: grpc.aio.Server, port: int, engine: RewardEngine,
                 health: health_aio.HealthServicer) -> None:  # fmt: skip
        self.server = server
        self.port = port
        self.engine = engine
        self.health = health
        self._watcher = asyncio.create_task(self._follow_engine())

    async def _follow_engine(self) -> None:
        serving: bool | None = None
        while True:
            ready = self.engine.ready
            if ready != serving:
                status = (
                    health_pb2.HealthCheckResponse.SERVING if ready
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )  # fmt: skip
                for service in ("", SERVICE_NAME):
                    await self.health.set(service, status)
                serving = ready
            await asyncio.sleep(HEALTH_POLL_S)

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING at once, then calls in flight get ``grace_s`` to finish."""
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_grpc_gateway(
    engine: RewardEngine, metrics: Metrics, api_keys: list[str], *, host: str, port: int,
    reloader: Reloader | None = None, admin_keys: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> GrpcGateway:  # fmt: skip
    """``reloader``: also serve the admin API (referee.v1.RefereeAdmin) with ``admin_keys``."""
    limit = engine.settings.server.max_request_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit + RECEIVE_MARGIN_BYTES),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a second listener
        ]
    )
    pb_grpc.add_RefereeServicer_to_server(RefereeServicer(engine, metrics, api_keys), server)
    names = [SERVICE_NAME]
    if reloader is not None:
        from referee.admin.servicer import AdminServicer

        pb_grpc.add_RefereeAdminServicer_to_server(
            AdminServicer(reloader, admin_keys or [], overrides), server
        )
        names.append(pb.DESCRIPTOR.services_by_name["RefereeAdmin"].full_name)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )  # fmt: skip
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise RuntimeError(f"gRPC: cannot listen on {address}")
    await server.start()
    log.info("gRPC gateway (referee.v1) listening on %s:%d", host, bound)
    return GrpcGateway(server, bound, engine, health)
