"""Generated gRPC stubs for ``referee.v1`` (``scripts/gen_proto.sh`` writes them; do not
edit ``referee_pb2*``). Importing this package needs the ``grpc`` extra."""
