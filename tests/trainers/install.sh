#!/usr/bin/env bash
# Install the trainers whose own client code the tests in tests/trainers run: the current
# release of OpenRLHF, verl and TRL, and the last release of each older protocol still
# supported (OpenRLHF 0.9: one POST per batch; verl 0.6: reward_model.reward_manager).
# Each goes with --no-deps into its own directory under DEST (default: .trainers/ in the
# repository, git-ignored), so two versions of one trainer never meet and nothing in the
# project's environment changes. Their pure-Python runtime dependencies that the project
# does not already have go, also with --no-deps and pinned, into DEST/deps. GPU-only
# dependencies (vllm, deepspeed, flash-attn) are not installed: tests/trainers/standins
# stands in for the few names the tested code imports from them.
# Usage: bash tests/trainers/install.sh [DEST]     (PYTHON=... to pick the interpreter)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$ROOT/.trainers}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

TRAINERS=(openrlhf==0.11.2 openrlhf==0.9.0 verl==0.9.1 verl==0.6.1 trl==1.16.0)
# Runtime dependencies of the code under test that the project's environment lacks.
DEPS=(pylatexenc==2.10 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 codetiming==1.4.0
      tensordict==0.10.0 pybind11==3.0.1 datasets==4.4.1 dill==0.4.0 multiprocess==0.70.18
      xxhash==3.6.0 pandas==2.3.3 fsspec==2025.10.0 hydra-core==1.3.2 jsonlines==4.0.0
      pyvers==0.2.3 pytz==2026.6 tzdata==2026.6 cloudpickle==3.1.3
      orjson==3.13.0)

mkdir -p "$DEST"
for spec in "${TRAINERS[@]}"; do
    dir="$DEST/${spec%%==*}-${spec##*==}"
    if [ ! -f "$dir/.installed" ]; then
        rm -rf "$dir"
        "$PYTHON" -m pip install --quiet --no-deps --target "$dir" "$spec"
        touch "$dir/.installed"
    fi
done
stamp="$DEST/deps/.installed-$(printf '%s\n' "${DEPS[@]}" | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    rm -rf "$DEST/deps"
    "$PYTHON" -m pip install --quiet --no-deps --target "$DEST/deps" "${DEPS[@]}"
    touch "$stamp"
fi
echo "trainers installed in $DEST: ${TRAINERS[*]}"
