"""Session-wide fixtures: real model weights prepared once per test run (see models.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the tests may reach for a model hub: weights come from installed packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Servers the tests start as subprocesses import the test probes (``tests.probes:...``)
# named in their configs: the repository root goes on their import path.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p
    )


@pytest.fixture(scope="session")
def minilm_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT reward model: MiniLM with a 3-logit head (scalar + two aspects)."""
    from tests.models import save_minilm_head

    return save_minilm_head(tmp_path_factory.mktemp("minilm-rm"), "sequence", num_labels=3)


@pytest.fixture(scope="session")
def minilm_classifier_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same reward model with another head (seed 1): a "new checkpoint" for reloads."""
    from tests.models import save_minilm_head

    return save_minilm_head(tmp_path_factory.mktemp("minilm-rm-b"), "sequence", 3, seed=1)


@pytest.fixture(scope="session")
def minilm_prm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A process reward model: MiniLM with a 2-label token-classification head."""
    from tests.models import save_minilm_head

    return save_minilm_head(tmp_path_factory.mktemp("minilm-prm"), "token", num_labels=2)


@pytest.fixture(scope="session")
def smollm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.models import save_smollm

    return save_smollm(tmp_path_factory.mktemp("smollm"))


@pytest.fixture(scope="session")
def smollm_classifier(tmp_path_factory: pytest.TempPathFactory, smollm: Path) -> Path:
    from tests.models import save_smollm_classifier

    return save_smollm_classifier(tmp_path_factory.mktemp("smollm-rm"), smollm)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny vision-language model (LLaVA) built from its config, with its processor."""
    from tests.models import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def tiny_llava_rm(tmp_path_factory: pytest.TempPathFactory, tiny_llava: Path) -> Path:
    """A VLM reward model: the tiny LLaVA under a seeded sequence-classification head."""
    from tests.models import save_tiny_llava_classifier

    return save_tiny_llava_classifier(tmp_path_factory.mktemp("tiny-llava-rm"), tiny_llava)


@pytest.fixture(scope="session")
def tiny_llava_judge(tmp_path_factory: pytest.TempPathFactory, tiny_llava: Path) -> Path:
    """A VLM judge: the tiny LLaVA taught to answer "Score: 5" for a red image and
    "Score: 1" for a blue one (seeded training, seconds)."""
    from tests.models import save_tiny_vlm_judge

    return save_tiny_vlm_judge(tmp_path_factory.mktemp("tiny-llava-judge"), tiny_llava)


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny vision-language model of the Idefics3 (SmolVLM) architecture, built from its
    config, with its processor: one vLLM's CPU build runs without torchvision."""
    from tests.models import save_tiny_idefics3

    return save_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(scope="session")
def tiny_idefics3_judge(tmp_path_factory: pytest.TempPathFactory, tiny_idefics3: Path) -> Path:
    """A VLM judge: the tiny Idefics3 taught as the tiny LLaVA judge is ("Score: 5" for a
    red image, "Score: 1" for a blue one; seeded training, seconds). 100 steps: at 60 its
    verdicts split red from blue clearly for some seeds only."""
    from tests.models import save_tiny_vlm_judge

    target = tmp_path_factory.mktemp("tiny-idefics3-judge")
    return save_tiny_vlm_judge(target, tiny_idefics3, steps=100)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CLIPModel with its processor (random weights, seed 0), saved like a hub
    checkpoint; logit_scale log(100), as OpenAI's CLIP ends training with."""
    from tests.models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), logit_scale=4.6052)


@pytest.fixture(scope="session")
def tiny_clip_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An aesthetic-style head (16 -> 8 -> 1 linear layers) over the tiny CLIP's embeddings."""
    from tests.models import save_linear_head

    return save_linear_head(tmp_path_factory.mktemp("clip-head") / "head.safetensors")


def _switched_on(name: str, *, default: bool) -> bool:
    """An on/off environment switch: 0/false/no/off and 1/true/yes/on, else ``default``."""
    value = os.environ.get(name, "").strip().lower()
    if value in {"0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on"}:
        return True
    return default


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests run only where CUDA is present (a lent accelerator), `vllm` tests unless
    REFEREE_VLLM_TESTS is off, `bench` tests (a benchmark script run end to end) when
    REFEREE_BENCH_TESTS is on; elsewhere they are reported as skipped with the reason,
    never silently dropped."""
    if not _switched_on("REFEREE_VLLM_TESTS", default=True):
        skip_vllm = pytest.mark.skip(
            reason="REFEREE_VLLM_TESTS=0: the vLLM environment (.venv-vllm) was not set up"
        )
        for item in items:
            if item.get_closest_marker("vllm"):
                item.add_marker(skip_vllm)
    if not _switched_on("REFEREE_BENCH_TESTS", default=False):
        skip_bench = pytest.mark.skip(
            reason="runs a benchmark script end to end (minutes); REFEREE_BENCH_TESTS=1 runs "
            "it (the pieces it drives have their own tests in the default run)"
        )
        for item in items:
            if item.get_closest_marker("bench"):
                item.add_marker(skip_bench)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU (runs where one is lent)")
        for item in gpu_items:
            item.add_marker(skip)
