"""``backend: sandbox_fusion`` over real HTTP against a STAND-IN SandboxFusion server
(tests/sandbox_fusion_standin.py, written from SandboxFusion's documented run_code API;
the real server is a container image that cannot run here)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from referee.scorers.base import ScoreInput
from referee.scorers.execution.code import CodeScorer
from tests.e2e.server import free_port
from tests.sandbox_fusion_standin import StandIn, running_standin

ADD = json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]})
ADD_PY = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def item(response: str, language: str = "python", tests: str = ADD) -> ScoreInput:
    return ScoreInput(id="i", prompt="", response=response, reference=tests, group=None,
                      messages=None, metadata={"language": language})  # fmt: skip


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[str, StandIn]]:
    with running_standin() as running:
        yield running


@pytest.fixture
async def scorer(standin: tuple[str, StandIn]) -> AsyncIterator[CodeScorer]:
    url, state = standin
    state.fail_next, state.sandbox_error = 0, False
    state.requests.clear()
    s = CodeScorer("code", CodeScorer.Options(
        backend="sandbox_fusion", endpoint=url, retries=2, limits={"cpu_s": 2, "memory_mb": 256},
    ))  # fmt: skip
    await s.setup()
    yield s
    await s.close()


async def test_verdicts_from_run_code_answers(
    scorer: CodeScorer, standin: tuple[str, StandIn]
) -> None:
    results = await scorer.score_batch([
        item(ADD_PY),
        item(ADD_PY.replace("a + b", "a - b")),
        item("```cpp\n#include <iostream>\nint main(){int a,b;std::cin>>a>>b;std::cout<<a+b;}\n```", "cpp"),
        item("```cpp\nint main( {\n```", "cpp"),
        item("```python\nimport time\ntime.sleep(5)\n```"),
        item("```python\nraise SystemExit(2)\n```"),
    ])  # fmt: skip
    assert [r.value for r in results] == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    reasons = [r.reason or "" for r in results]
    assert reasons[1].startswith("case 0: wrong_answer")
    assert reasons[3].startswith("case 0: compile_error")
    assert reasons[4].startswith("case 0: time_limit")
    assert reasons[5].startswith("case 0: runtime_error")
    sent = standin[1].requests[0]
    assert sent["language"] == "python" and sent["stdin"] in ("1 2\n", "3 4\n")
    assert sent["run_timeout"] == 2 and sent["memory_limit_MB"] == 256
    assert sent["files"] == {} and sent["fetch_files"] == []


async def test_5xx_answers_are_retried(scorer: CodeScorer, standin: tuple[str, StandIn]) -> None:
    standin[1].fail_next = 2
    [result] = await scorer.score_batch([item(ADD_PY)])
    assert result.value == 1.0
    assert len(standin[1].requests) == 4  # 2 refused, then 2 cases


async def test_a_service_that_stays_down_fails_the_item_not_a_zero(
    scorer: CodeScorer, standin: tuple[str, StandIn]
) -> None:
    standin[1].fail_next = 100
    [result] = await scorer.score_batch([item(ADD_PY)])
    assert result.value is None and result.error_type == "sandbox_unavailable"
    assert "HTTP 503" in (result.error or "")
    standin[1].fail_next = 0
    standin[1].sandbox_error = True
    [result] = await scorer.score_batch([item(ADD_PY)])
    assert result.value is None and result.error_type == "sandbox_error"


async def test_nothing_listening_is_a_per_item_error() -> None:
    s = CodeScorer("code", CodeScorer.Options(
        backend="sandbox_fusion", endpoint=f"http://127.0.0.1:{free_port()}", retries=1,
    ))  # fmt: skip
    await s.setup()
    [result] = await s.score_batch([item(ADD_PY)])
    await s.close()
    assert result.value is None and result.error_type == "sandbox_unavailable"
    assert "ConnectError" in (result.error or "")


def test_sandbox_fusion_needs_an_endpoint() -> None:
    with pytest.raises(ValueError, match="needs endpoint"):
        CodeScorer.Options(backend="sandbox_fusion")
