"""The gRPC gateway (``referee.v1``, grpc.aio): the servicer translates and delegates to
the engine, as the HTTP routes do. Imported only when ``server.grpc_port`` is set."""

from referee.grpc.server import GrpcGateway, start_grpc_gateway

__all__ = ["GrpcGateway", "start_grpc_gateway"]
