#!/usr/bin/env bash
# Run Referee's test suite (unit, integration, e2e). Extra arguments go to pytest.
# Sets itself up on first run: creates .venv and installs what is missing, and .venv-vllm
# (vLLM's CPU build, ~3.4 GB) for the judge's vllm backend tests; REFEREE_VLLM_TESTS=0
# leaves those out. tests/trainers/install.sh puts OpenRLHF, verl and TRL in .trainers/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/deploy/scripts/bootstrap.sh" "server,dev,tokenizers,grpc,models,ray"
EXTRA=()
case "${REFEREE_VLLM_TESTS:-1}" in 0|false|no|off) VLLM_TESTS=0 ;; *) VLLM_TESTS=1 ;; esac
if [ "$VLLM_TESTS" = 1 ]; then
    source "$ROOT/deploy/scripts/bootstrap_vllm.sh"
else
    EXTRA=(--ignore=tests/e2e/test_judge_vllm.py)
fi
cd "$ROOT"
# The trainers whose own client code tests/trainers runs (pinned, --no-deps, in .trainers/).
bash "$ROOT/tests/trainers/install.sh"
exec python -m pytest ${EXTRA[@]+"${EXTRA[@]}"} "$@"
