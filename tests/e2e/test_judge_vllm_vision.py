"""The judge's `vllm` backend with images (multi-modal data to an in-process engine), run
in the vLLM environment (.venv-vllm) on the tiny Idefics3 judge and compared with the
transformers backend in this process: the same rewards, and red images scored high and
blue ones low by both (so the images reached the engine's model).

The judge is of the Idefics3 (SmolVLM) architecture because vLLM's CPU build runs it
without torchvision: vLLM's LLaVA module imports its Pixtral module, which imports
transformers' Pixtral image processor, which needs torchvision, and no torchvision wheel
imports beside the torch 2.13 CPU build (Qwen2-VL, Gemma 3, LLaVA-NeXT and Mistral 3 need
it too)."""

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


def test_vllm_judges_image_items_as_the_transformers_backend(tiny_idefics3_judge: Path) -> None:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"no vLLM environment at {VLLM_PYTHON.parent.parent}: run `bash tests/run.sh`")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "service"), str(ROOT / "clients"), str(ROOT)])}  # fmt: skip
    run = subprocess.run(
        [str(VLLM_PYTHON), "-m", "tests.e2e.vllm_vision_judge", str(tiny_idefics3_judge)],
        capture_output=True, text=True, timeout=540, cwd=ROOT, env=env,
    )  # fmt: skip
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result (exit {run.returncode}): {run.stderr[-2000:]}"
    answer = json.loads(lines[-1])
    assert "failed" not in answer, f"the vLLM judge failed: {answer}\n{run.stderr[-2000:]}"
    cls = scorer_class("judge")
    options = {"model": str(tiny_idefics3_judge), "scale": [1, 5]}
    local = cls("l", cls.Options.model_validate(options))

    async def judged() -> list[Any]:
        await local.setup()
        try:
            return await local.score_batch(items())
        finally:
            await local.close()

    want = asyncio.run(judged())
    assert [r.error for r in want] == [None] * len(want)
    assert answer["errors"] == [None] * len(want)
    for have, expected in zip(answer["rewards"], want, strict=True):
        assert have == pytest.approx(expected.value, abs=1e-4)
    # even items show a red image, odd ones a blue one: the verdict follows the image
    red, blue = answer["rewards"][0::2], answer["rewards"][1::2]
    assert min(red) > 0.8 and max(blue) < 0.2, answer["rewards"]
