"""The judge's `vllm` backend with images (multi-modal data to an in-process engine), run
in the vLLM environment (.venv-vllm) on the tiny LLaVA judge and compared with the
transformers backend in this process.

On this CPU build it cannot run: vLLM's LLaVA module imports vLLM's Pixtral module, which
imports transformers' Pixtral image processor, which needs torchvision, and no torchvision
wheel imports beside the torch 2.13 CPU build (Qwen2-VL, Gemma 3, LLaVA-NeXT and Mistral 3
need it too). That one cause, read from the engine's own error, is reported as an expected
failure (`xfail`, with the error); any other failure fails, and where torchvision imports
the comparison runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from referee.scorers import scorer_class
from tests.e2e.vllm_vision_judge import items

pytest.importorskip("torch", reason="the comparison runs the transformers backend here")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("REFEREE_VLLM_PYTHON", ROOT / ".venv-vllm/bin/python"))
TORCHVISION_MISSING = "No module named 'torchvision'"


def test_vllm_judges_image_items_as_the_transformers_backend(tiny_llava_judge: Path) -> None:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"no vLLM environment at {VLLM_PYTHON.parent.parent}: run `bash tests/run.sh`")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "service"), str(ROOT / "clients"), str(ROOT)])}  # fmt: skip
    run = subprocess.run(
        [str(VLLM_PYTHON), "-m", "tests.e2e.vllm_vision_judge", str(tiny_llava_judge)],
        capture_output=True, text=True, timeout=540, cwd=ROOT, env=env,
    )  # fmt: skip
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result (exit {run.returncode}): {run.stderr[-2000:]}"
    answer = json.loads(lines[-1])
    if "failed" in answer:
        if TORCHVISION_MISSING in run.stdout + run.stderr + answer["failed"]:
            pytest.xfail(
                "vLLM's LLaVA (and Qwen2-VL, Gemma 3...) needs torchvision, which does not "
                f"import beside this torch CPU build: {answer['failed'][:200]}"
            )
        pytest.fail(f"the vLLM judge failed: {answer['failed']}\n{run.stderr[-2000:]}")
    cls = scorer_class("judge")
    local = cls("l", cls.Options.model_validate({"model": str(tiny_llava_judge), "scale": [1, 5]}))

    async def judged() -> list[Any]:
        await local.setup()
        return await local.score_batch(items())

    want = asyncio.run(judged())
    assert answer["errors"] == [None] * len(want)
    for have, expected in zip(answer["rewards"], want, strict=True):
        assert have == pytest.approx(expected.value, abs=1e-4)
