"""The `vllm` judge backend confines an engine-side failure to its own item. The engine
here is a stand-in (a fake `vllm` module set, in this process): a real vLLM engine
cannot be made to reject one chosen request of a batch on demand (a validation error,
a queue overflow, an aborted request, an unexpected exception). The real engine runs in
tests/e2e/test_judge_vllm.py; the tokenizer here is SmolLM2's, the real one."""

from __future__ import annotations

import asyncio
import math
import sys
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from referee.scorers import scorer_class
from referee.scorers.judge.backends import JudgeCallError

pytest.importorskip("transformers", reason="the judge's tokenizer")


class VLLMServerError(Exception): ...


class GracefulHTTPError(Exception): ...


class VLLMValidationError(Exception): ...  # vLLM's: not a ValueError


class QueueOverflowError(GracefulHTTPError): ...


class EngineDeadError(VLLMServerError): ...


@dataclass
class Logprob:
    logprob: float


@dataclass
class Completion:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str = "length"


@dataclass
class Output:
    outputs: list[Completion]


@dataclass
class FakeEngine:
    """Answers by the item's marker (the prompt's last token before the label tokens)."""

    failures: dict[int, Exception | str] = field(default_factory=dict)
    errored: bool = False
    model_config: Any = field(default_factory=lambda: types.SimpleNamespace(max_model_len=4096))

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Output]:
        ids = prompt["prompt_token_ids"]
        failure = next((f for marker, f in self.failures.items() if marker in ids), None)
        if isinstance(failure, Exception):
            raise failure
        await asyncio.sleep(0)
        reason = failure or "length"
        wanted = getattr(params, "logprob_token_ids", None)
        if wanted is None:  # generation
            yield Output([Completion(0, "Score: 7", [], None, reason)])
            return
        steps = params.max_tokens
        forced = params.allowed_token_ids or [wanted[0]]
        dist = {t: Logprob(-2.3) for t in wanted}
        yield Output([Completion(0, "", forced * steps, [dist] * steps, reason)])


def fake_vllm() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in (
        "vllm", "vllm.inputs", "vllm.sampling_params", "vllm.v1", "vllm.v1.engine",
        "vllm.v1.engine.exceptions")}  # fmt: skip
    modules["vllm"].SamplingParams = lambda **kw: types.SimpleNamespace(**kw)  # type: ignore[attr-defined]
    modules["vllm.inputs"].TokensPrompt = dict  # type: ignore[attr-defined]
    modules["vllm.sampling_params"].RequestOutputKind = types.SimpleNamespace(FINAL_ONLY=2)  # type: ignore[attr-defined]
    modules["vllm.v1.engine.exceptions"].EngineDeadError = EngineDeadError  # type: ignore[attr-defined]
    return modules


async def test_each_engine_failure_is_one_items_error(
    smollm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, module in fake_vllm().items():
        monkeypatch.setitem(sys.modules, name, module)
    cls = scorer_class("judge")
    judge = cls("j", cls.Options.model_validate({"model": str(smollm), "backend": "vllm"}))
    backend: Any = judge.backend
    await asyncio.to_thread(backend.lm.load_tokenizer_only, 4096)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    marker = [backend.lm.tokens(f" {w}zq", add_special_tokens=False)[0] for w in words]
    assert len(set(marker)) == len(words)
    backend._engine = FakeEngine({
        marker[1]: VLLMValidationError("token id 99999 is out of vocabulary"),
        marker[2]: QueueOverflowError("queue full"),
        marker[3]: "abort",
        marker[4]: RuntimeError("unexpected"),
    })  # fmt: skip
    chats = [[{"role": "user", "content": f"Rate {w}zq"}] for w in words]
    labels = [str(i) for i in range(1, 11)]

    got = await backend.label_probs(chats, "Score: ", labels)
    assert [type(g).__name__ for g in got] == ["dict", *["JudgeCallError"] * 4, "dict"]
    p = math.exp(-2.3)
    assert got[0]["10"] == pytest.approx(p * p) and got[5]["7"] == pytest.approx(p)
    errors = [g for g in got if isinstance(g, JudgeCallError)]
    assert [e.error_type for e in errors] == [
        "judge_error", "judge_unavailable", "judge_unavailable", "judge_error"]  # fmt: skip
    assert "out of vocabulary" in str(errors[0]) and "abort" in str(errors[2])

    sampling = judge.options.sampling
    texts = await backend.generate(chats, sampling, 1)
    assert texts[0] == ["Score: 7"] and texts[5] == ["Score: 7"]
    assert sum(isinstance(t, JudgeCallError) for t in texts) == 4

    backend._engine = FakeEngine({marker[0]: EngineDeadError("core process gone")})
    dead = await backend.label_probs(chats[:1], "Score: ", labels)
    assert isinstance(dead[0], JudgeCallError) and dead[0].error_type == "judge_unavailable"
    assert backend.health()["ready"] is False and "died" in str(backend.health()["error"])
