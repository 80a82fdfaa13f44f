#!/usr/bin/env bash
# Regenerate the Python gRPC stubs from proto/referee/v1/referee.proto into
# clients/referee_client/_proto/ (or into DEST, for the test that checks the committed
# stubs are current). Needs grpcio-tools (the `dev` extra).
# Usage: bash scripts/gen_proto.sh [DEST]
#
# The stubs are committed, not generated at build time: the SDK installs from a plain
# wheel with `pip install referee[grpc]` and must not need grpcio-tools (a compiler
# toolchain) on a trainer's machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/clients/referee_client/_proto}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m grpc_tools.protoc -I "$ROOT/proto" \
    --python_out="$WORK" --pyi_out="$WORK" --grpc_python_out="$WORK" \
    referee/v1/referee.proto
mkdir -p "$DEST"
cp "$WORK/referee/v1/referee_pb2.pyi" "$DEST/"
# protoc names the message classes' module after the proto path (referee.v1.referee_pb2),
# which does not exist as a Python module: messages could not be pickled (Ray Serve's gRPC
# proxy pickles them). Name the module where the stubs really live.
sed -e "s/'referee\.v1\.referee_pb2'/'referee_client._proto.referee_pb2'/" \
    "$WORK/referee/v1/referee_pb2.py" > "$DEST/referee_pb2.py"
grep -q "'referee_client._proto.referee_pb2'" "$DEST/referee_pb2.py" \
    || { echo "gen_proto: the module-name rewrite did not apply; check protoc's output" >&2; exit 1; }
# protoc writes an absolute import (`from referee.v1 import referee_pb2`), which would
# find the server package `referee`; the stubs live inside referee_client, so make it
# relative.
sed -e 's/^from referee\.v1 import referee_pb2 as/from . import referee_pb2 as/' \
    "$WORK/referee/v1/referee_pb2_grpc.py" > "$DEST/referee_pb2_grpc.py"
grep -q '^from \. import referee_pb2 as' "$DEST/referee_pb2_grpc.py" \
    || { echo "gen_proto: the import rewrite did not apply; check protoc's output" >&2; exit 1; }
