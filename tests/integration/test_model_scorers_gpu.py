"""The GPU path of the model scorers: `dtype: auto` picks bfloat16 on CUDA, batches run on
the device, and rewards stay within bf16 precision of the fp32 CPU rewards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_model_scorers import batched_and_alone, scorer, skewed_items

pytestmark = pytest.mark.gpu


async def test_classifier_on_cuda_runs_bf16_and_matches_fp32_within_bf16_precision(
    smollm_classifier: Path,
) -> None:
    gpu = scorer("classifier", model=str(smollm_classifier))
    cpu = scorer("classifier", model=str(smollm_classifier), device="cpu")
    await gpu.setup()
    await cpu.setup()
    assert str(gpu.model.device).startswith("cuda") and "bfloat16" in str(gpu.model.dtype)
    items = skewed_items(32, 200)
    fast, exact = await gpu.score_batch(items), await cpu.score_batch(items)
    for a, b in zip(fast, exact, strict=True):
        assert a.value is not None and b.value is not None
        assert abs(a.value - b.value) <= 0.05 * max(1.0, abs(b.value))
    assert await batched_and_alone(gpu, items) <= 0.05
