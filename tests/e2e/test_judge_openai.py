"""The judge's `openai` backend against a real OpenAI-compatible server process serving
SmolLM2 (tests/e2e/openai_server.py): the same logprob verdicts as the in-process
transformers backend, and retries driven by the server's 503 and 429 answers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from referee.scorers import scorer_class
from tests.e2e.server import free_port
from tests.support import score_input

pytest.importorskip("torch", reason="the test server runs the model with transformers")

Q = "What is the capital of France?"


@contextlib.contextmanager
def serving(model: Path, *flags: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.openai_server", "--model",
                             str(model), "--port", str(port), *flags])  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the test server exited"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def judge(model: Path, url: str, **options: Any) -> Any:
    cls = scorer_class("judge")
    endpoint = {"base_url": f"{url}/v1", "backoff_s": 0.05, **options.pop("endpoint", {})}
    made = cls(
        "j",
        cls.Options.model_validate(
            {"model": str(model), "backend": "openai", "endpoint": endpoint, **options}
        ),
    )
    await made.setup()
    return made


async def test_endpoint_logprob_verdicts_match_the_local_backend(smollm: Path) -> None:
    items = [score_input("Paris.", id="a", prompt=Q), score_input("London.", id="b", prompt=Q)]
    cls = scorer_class("judge")
    local = cls("l", cls.Options.model_validate({"model": str(smollm)}))
    await local.setup()
    expected = await local.score_batch(items)
    with serving(smollm, "--fail-first", "1") as url:  # the first call is retried
        remote = await judge(smollm, url)
        got = await remote.score_batch(items)
        await remote.close()
    for want, have in zip(expected, got, strict=True):
        assert have.error is None, have.error
        assert want.aspects["verdict_mass"] > 0.99  # the labels are within the top 20
        # float noise across processes only (measured: 2e-7)
        assert have.value == pytest.approx(want.value, abs=1e-5)
    # the two answers score differently (by 0.005, 500 times the tolerance): results that
    # were mixed up, or one verdict read for both, would fail above
    assert abs(got[0].value - got[1].value) > 1e-3


async def test_429s_from_a_busy_server_are_retried_until_every_item_is_judged(smollm: Path) -> None:
    with serving(smollm, "--max-inflight", "1") as url:
        s = await judge(
            smollm,
            url,
            mode="parse",
            endpoint={"max_concurrency": 4, "max_retries": 60},
            sampling={"max_new_tokens": 4},
            parse_retries=0,
        )
        items = [score_input(f"Paris {i}.", id=str(i), prompt=Q) for i in range(4)]
        results = await s.score_batch(items)
        await s.close()
        async with httpx.AsyncClient() as client:
            seen = (await client.get(f"{url}/health")).json()["requests"]
    assert all(r.error_type == "judge_parse_error" for r in results), results  # judged, unparsed
    assert seen > 4  # some requests were answered 429 and sent again


async def test_an_endpoint_that_keeps_failing_is_a_per_item_error(smollm: Path) -> None:
    with serving(smollm, "--fail-first", "100") as url:
        s = await judge(smollm, url, endpoint={"max_retries": 1})
        (result,) = await s.score_batch([score_input("Paris.", prompt=Q)])
        await s.close()
    assert result.value is None and result.error_type == "judge_unavailable"
