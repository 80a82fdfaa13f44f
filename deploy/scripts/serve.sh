#!/usr/bin/env bash
# Start Referee on the embedded default config (or pass --config FILE, --port N).
# Sets itself up on first run: creates .venv and installs what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/deploy/scripts/bootstrap.sh" "server,models"
exec referee serve "$@"
