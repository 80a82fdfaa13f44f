"""The model scorers' `backend` option without an engine or a server: what enters the
fingerprint (numbers-changing settings only), the vLLM engine arguments a scorer asks
for, settings refused when the config is built, and vllm staying unimported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from referee.scorers import scorer_class

pytest.importorskip("torch", reason="the fingerprint names the effective dtype")

ROOT = Path(__file__).resolve().parents[2]
MODEL = "org/reward-model"  # a hub id: nothing is read from disk to fingerprint it


def fingerprint(kind: str = "classifier", **options: Any) -> str:
    cls = scorer_class(kind)
    return cls("s", cls.Options.model_validate({"model": MODEL, **options})).fingerprint()


def remote(**settings: Any) -> dict[str, Any]:
    return {"backend": "remote", "remote": {"url": "http://rm:8000", **settings}}


def test_the_backend_enters_the_fingerprint_only_where_it_changes_numbers() -> None:
    plain = fingerprint()
    assert fingerprint(backend="transformers") == plain
    on_vllm = fingerprint(backend="vllm")
    assert on_vllm != plain
    # memory and batching settings do not change a number; the engine's arguments may
    assert fingerprint(backend="vllm", vllm={"gpu_memory_utilization": 0.5}) == on_vllm
    assert fingerprint(backend="vllm", vllm={"engine_args": {"quantization": "fp8"}}) != on_vllm
    served = fingerprint(**remote())
    assert served not in (plain, on_vllm)
    assert fingerprint(**remote(url="http://elsewhere:9000", max_concurrency=2)) == served
    assert fingerprint(**remote(served_model="rm-v2")) != served
    assert fingerprint(**remote(api="tei")) != served


def test_a_transformers_fingerprint_reads_no_backend_setting() -> None:
    cls = scorer_class("classifier")
    scorer = cls("s", cls.Options.model_validate({"model": MODEL}))
    assert not {"backend", "vllm", "remote"} & set(scorer.fingerprint_options())


def test_the_engine_runs_the_pooling_runner_and_similarity_pools_as_transformers_does() -> None:
    from referee.scorers.models._vllm_pooling import pooling_engine_args

    cls = scorer_class("similarity")
    options = cls.Options.model_validate(
        {"model": MODEL, "backend": "vllm", "dtype": "float32",
         "vllm": {"max_model_len": 256, "engine_args": {"max_num_partial_prefills": 2}}}
    )  # fmt: skip
    args = pooling_engine_args(options, "embed")
    assert args["runner"] == "pooling" and args["dtype"] == "float32"
    assert args["pooler_config"] == {"pooling_type": "MEAN", "use_activation": True}
    assert args["max_model_len"] == 256 and args["max_num_partial_prefills"] == 2
    assert "gpu_memory_utilization" not in args  # unset: vLLM's default
    classifier = scorer_class("classifier").Options.model_validate({"model": MODEL})
    assert "pooler_config" not in pooling_engine_args(classifier, "classify")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "vllm", "vllm": {"engine_args": {"runner": "generate"}}}, "set by the scorer"),
        ({"backend": "vllm", "vllm": {"engine_args": {"dtype": "half"}}}, "scorer's own options"),
        ({"backend": "vllm", "vllm": {"engine_args": {"max_model_len": 8}}}, "vllm.max_model_len"),
        ({"backend": "vllm", "attn_implementation": "sdpa"}, "backend transformers only"),
        ({"backend": "remote"}, "needs `remote`"),
        ({"backend": "remote", "remote": {"url": "rm:8000"}}, "http:// or https://"),
    ],
)
def test_settings_a_backend_cannot_take_fail_when_the_config_is_built(
    options: dict[str, Any], message: str
) -> None:
    cls = scorer_class("classifier")
    with pytest.raises(ValueError, match=message):
        cls.Options.model_validate({"model": MODEL, **options})


def test_models_a_backend_cannot_run_are_refused_before_start_up() -> None:
    cls = scorer_class("classifier")
    armo = cls.Options.model_validate({"model": MODEL, "auto_class": "AutoModel", **remote()})
    with pytest.raises(ValueError, match="backend transformers only"):
        cls("s", armo)
    tei = cls.Options.model_validate({"model": MODEL, "truncation": "left", **remote(api="tei")})
    with pytest.raises(ValueError, match="TEI cuts inputs on the right only"):
        cls("s", tei)


def test_building_a_vllm_scorer_imports_no_vllm() -> None:
    code = (
        "import sys\n"
        "from referee.scorers import scorer_class\n"
        "cls = scorer_class('classifier')\n"
        "cls('s', cls.Options.model_validate({'model': 'org/rm', 'backend': 'vllm'}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('vllm', 'torch')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)  # fmt: skip
    assert done.stdout.strip() == "[]"
