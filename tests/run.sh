#!/usr/bin/env bash
# Run Referee's test suite (unit, integration, e2e). Extra arguments go to pytest.
# Sets itself up on first run: creates .venv and installs what is missing, and .venv-vllm
# (vLLM's CPU build, ~3.4 GB) for the judge's vllm backend tests; REFEREE_VLLM_TESTS=0
# does not set that up, and the tests marked `vllm` are reported as skipped (tests/conftest.py).
# tests/trainers/install.sh puts OpenRLHF, verl and TRL in .trainers/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/deploy/scripts/bootstrap.sh" "server,dev,tokenizers,grpc,models,ray,eval"
case "$(printf %s "${REFEREE_VLLM_TESTS:-1}" | tr A-Z a-z)" in
    0|false|no|off) export REFEREE_VLLM_TESTS=0 ;;  # tests/conftest.py skips them, with why
    *) source "$ROOT/deploy/scripts/bootstrap_vllm.sh" ;;
esac
cd "$ROOT"
# The trainers whose own client code tests/trainers runs (pinned, --no-deps, in .trainers/).
bash "$ROOT/tests/trainers/install.sh"
exec python -m pytest "$@"
