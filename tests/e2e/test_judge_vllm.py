"""The judge's in-process `vllm` backend, for real: `referee serve` runs in the vLLM
environment (.venv-vllm, vLLM's CPU build, made by deploy/scripts/bootstrap_vllm.sh,
which `bash tests/run.sh` runs) with SmolLM2-135M-Instruct judges on one shared engine,
and this test process computes the same judgments with the `transformers` backend in
fp32 to compare: exact label probabilities (not top-k) and the same greedy critiques."""

from __future__ import annotations

import concurrent.futures
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
pytestmark = pytest.mark.vllm  # skipped, with the reason, when REFEREE_VLLM_TESTS=0

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("REFEREE_VLLM_PYTHON", ROOT / ".venv-vllm/bin/python"))
TOL = 1e-4  # fp32 on both sides; vLLM's CPU kernels vs torch's differ in the last digits

# One engine for every judge here: equal model, dtype and engine settings.
ENGINE = {"kv_cache_memory_bytes": 1 << 30, "enforce_eager": True}
SHOTS = [
    {"prompt": "What is 2+2?", "response": "4", "answer": "Score: 9"},
    {"prompt": "What is 3+3?", "response": "7", "answer": "Score: 2"},
]
RUBRIC = "Correct, direct answers score high; wrong or evasive ones score low."
JUDGES: dict[str, dict[str, Any]] = {
    "pointwise": {"rubric": RUBRIC},
    "reference": {"template": "reference"},
    # the few-shot examples make SmolLM2 end with a verdict (without them it never did:
    # every item was a parse error and no value was compared)
    "critique": {
        "mode": "parse",
        "return_critique": True,
        "few_shot": SHOTS,
        "sampling": {"max_new_tokens": 40},
    },
    "vote": {
        "mode": "vote",
        "votes": 4,
        "few_shot": SHOTS,
        "sampling": {"temperature": 1.0, "seed": 7, "max_new_tokens": 5},
    },
    "pairwise": {"template": "pairwise", "group_mode": "pairwise"},
    "short": {"max_length": 96},
}
Q = "What is the capital of France?"
ITEMS = [
    {"id": "paris", "prompt": Q, "response": "Paris.", "reference": "Paris"},
    {"id": "london", "prompt": Q, "response": "London.", "reference": "Paris"},
    {"id": "long", "prompt": Q, "reference": "Paris",
     "response": "The capital of France is Paris, on the Seine, home to the Louvre."},
    {"id": "sum", "prompt": "What is 12 + 30?", "response": "42", "reference": "42"},
]  # fmt: skip


def judge_options(smollm: Path, name: str) -> dict[str, Any]:
    return {"model": str(smollm), **JUDGES[name]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm: Path) -> Iterator[str]:
    if not VLLM_PYTHON.exists():
        pytest.fail(
            f"no vLLM environment at {VLLM_PYTHON.parent.parent}: run `bash tests/run.sh` "
            "(or `source deploy/scripts/bootstrap_vllm.sh`) to create it"
        )
    scorers = {
        name: {"kind": "judge",
               "options": {**judge_options(smollm, name), "backend": "vllm", "vllm": ENGINE}}
        for name in JUDGES
    }  # fmt: skip
    pipelines = {name: {"reward": {"type": "scorer", "scorer": name}} for name in JUDGES}
    config = tmp_path_factory.mktemp("vllm") / "config.yaml"
    # No cache: every request below reaches the engine (repeats are the point).
    config.write_text(yaml.safe_dump({"scorers": scorers, "pipelines": pipelines,
                                      "cache": {"backend": "none"}}))  # fmt: skip
    referee = [str(VLLM_PYTHON.with_name("referee"))]
    with running_server("--config", str(config), referee=referee, ready_s=420) as (url, _):
        yield url


def served(url: str, pipeline: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/v1/rewards", json={"pipeline": pipeline, "items": items},
                          timeout=300)  # fmt: skip
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert [r["id"] for r in results] == [i["id"] for i in items]
    assert not any(r["cached"] for r in results)
    return results


async def local(smollm: Path, name: str, items: list[dict[str, Any]]) -> list[Any]:
    """The same judge on the transformers backend, in this process (fp32 on the CPU)."""
    cls = scorer_class("judge")
    scorer = cls(name, cls.Options.model_validate(judge_options(smollm, name)))
    await scorer.setup()
    try:
        peers = {}
        if scorer.options.group_mode != "none":
            peers = {i["id"]: tuple(o["response"] for o in items if o is not i) for i in items}
        fields = ("id", "prompt", "response", "reference", "group")
        inputs = [
            ScoreInput(
                **{f: i.get(f) for f in fields},
                messages=None,
                metadata=None,
                peers=peers.get(i["id"]),
            )
            for i in items
        ]
        return await scorer.score_batch(inputs)
    finally:
        await scorer.close()


@pytest.mark.parametrize("name", ["pointwise", "reference"])
async def test_logprob_verdicts_equal_the_transformers_backend(
    server: str, smollm: Path, name: str
) -> None:
    """pointwise reads labels 1..10 ("10" is two tokens: a second request after "1"),
    reference reads Yes/No (one token each): both exact, not top-k."""
    got = served(server, name, ITEMS)
    want = await local(smollm, name, ITEMS)
    for have, expected in zip(got, want, strict=True):
        assert have["error"] is None, have["error"]
        assert 0.0 <= have["reward"] <= 1.0
        assert have["reward"] == pytest.approx(expected.value, abs=TOL), have["id"]
    assert len({round(r["reward"], 6) for r in got}) == len(got)  # the items are told apart


def test_judges_with_different_labels_in_the_same_engine_steps(server: str) -> None:
    """pointwise (digits) and reference (Yes/No) requests at once: the engine batches
    them into the same steps, and each row still gets its own label tokens' logprobs."""
    items = [{**i, "id": f"{i['id']}-{k}"} for k in range(2) for i in ITEMS]
    alone = {name: served(server, name, items) for name in ("pointwise", "reference")}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [
            (name, pool.submit(served, server, name, items))
            for name in ("pointwise", "reference", "pointwise", "reference")
        ]
    for name, future in futures:
        for have, expected in zip(future.result(), alone[name], strict=True):
            assert have["error"] is None, have["error"]
            assert have["reward"] == pytest.approx(expected["reward"], abs=TOL)


async def test_greedy_critiques_equal_the_transformers_backend(server: str, smollm: Path) -> None:
    got = served(server, "critique", ITEMS)
    want = await local(smollm, "critique", ITEMS)
    compared = 0
    for have, expected in zip(got, want, strict=True):
        if expected.error is not None:  # SmolLM2 often omits the verdict line: both say so
            assert have["error"]["type"] == expected.error_type == "judge_parse_error"
            assert have["error"]["message"].endswith(expected.error)
            continue
        assert have["error"] is None, have["error"]
        assert have["reward"] == pytest.approx(expected.value)
        assert have["info"]["critique"] == expected.reason
        compared += 1
    # a verdict read, and equal, for most items: not only errors that agree (measured
    # with the transformers backend: 4 of 4)
    assert compared >= 3, f"only {compared} of {len(ITEMS)} items had a verdict to compare"


def test_votes_are_seeded_per_item_whatever_shares_the_engine(server: str) -> None:
    alone = served(server, "vote", ITEMS[:1])[0]
    crowded = served(server, "vote", [*ITEMS[1:], ITEMS[0]])[-1]
    assert alone["error"] is None, alone["error"]
    assert crowded["reward"] == alone["reward"]
    assert 0.0 <= alone["reward"] <= 1.0


async def test_pairwise_win_rates_come_from_both_orders(server: str, smollm: Path) -> None:
    group = [{**i, "group": "g"} for i in ITEMS[:3]]
    got = served(server, "pairwise", group)
    # Each pair judged in both orders and combined right, the two win rates of a pair add
    # up to 1 whatever the judge says, so a full round-robin's rewards add up to half the
    # group's size (this checks the combining; the comparison below checks the values;
    # which item a verdict credits: tests/e2e/test_judge_direction.py).
    assert sum(r["reward"] for r in got) == pytest.approx(len(group) / 2, abs=1e-9)
    want = await local(smollm, "pairwise", group)
    for have, expected in zip(got, want, strict=True):
        assert have["reward"] == pytest.approx(expected.value, abs=TOL)


def test_each_item_gets_its_own_result_or_error_in_order(server: str) -> None:
    items = [
        ITEMS[0],
        {"id": "too-long", "prompt": Q, "response": "Paris. " * 80},
        {"id": "empty", "prompt": Q, "response": "   "},
        ITEMS[3],
    ]
    got = served(server, "short", items)
    assert got[0]["error"] is None and got[3]["error"] is None
    assert got[1]["error"]["type"] == "input_too_long"
    assert "at most 96" in got[1]["error"]["message"]
    assert got[2]["reward"] == 0.0 and "judge guard" in got[2]["info"]["short"]


def test_the_judges_share_one_ready_engine(server: str) -> None:
    ready = httpx.get(f"{server}/readyz", timeout=10).json()
    assert ready["ready"] is True
    for name in JUDGES:
        health = ready["scorers"][name]
        assert health["backend"] == "vllm" and health["ready"] is True
        assert health["engine_users"] == len(JUDGES)
