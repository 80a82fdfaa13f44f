#!/usr/bin/env bash
# Run Referee's test suite (unit, integration, e2e). Extra arguments go to pytest.
# Sets itself up on first run: creates .venv and installs what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/deploy/scripts/bootstrap.sh" "server,dev,tokenizers,grpc,models,ray"
cd "$ROOT"
exec python -m pytest "$@"
