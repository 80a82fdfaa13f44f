"""Runs OpenRLHF's own code against a Referee server, in a process whose path holds one
OpenRLHF release (tests/trainers/install.sh) and the vLLM stand-in.

    python -m tests.trainers.run_openrlhf [TRAIN_PPO_RAY FLAGS...] < rollouts.json

1. The flags go through ``openrlhf.cli.train_ppo_ray``'s own ``__main__`` block (its
   argparse and its checks), with ``train`` replaced by a function that keeps the args:
   a flag OpenRLHF does not know fails here as it would for a user.
2. 0.11+: every prompt goes to OpenRLHF's ``RolloutRayActor.generate_responses`` (n
   concurrent ``SingleTurnAgentExecutor.execute`` calls, each POSTing its rollout to
   ``--reward.remote_url``), all prompts at once as its samples generator dispatches
   them; each answer is turned into an ``Experience`` by
   ``SamplesGenerator._process_response_into_experience``. The engine object stands in
   for vLLM's: it returns the fixed completions given on stdin, tokenised with a real
   tokenizer. 0.9: one batch through ``remote_rm_utils.request_api_wrapper``.
3. Prints one JSON line: per prompt, the rewards and scores OpenRLHF ended up with.

stdin: ``{"tokenizer": DIR, "rollouts": [{"prompt", "label", "responses": [...]}]}``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import datetime
import importlib.util
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def parse_flags(flags: list[str]) -> Any:
    """OpenRLHF's own argument parsing and checks (train_ppo_ray's __main__ block)."""
    spec = importlib.util.find_spec("openrlhf")
    assert spec is not None and spec.origin is not None
    # The module's own imports build the whole trainer (deepspeed, peft): only its
    # __main__ block is run, which is where the parser and the checks are.
    source = Path(spec.origin).parent / "cli" / "train_ppo_ray.py"
    tree = ast.parse(source.read_text())
    main = next(
        node for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    )  # fmt: skip
    captured: list[Any] = []
    namespace = {"argparse": argparse, "os": os, "datetime": datetime.datetime,
                 "train": captured.append, "__name__": "__main__"}  # fmt: skip
    sys.argv = ["train_ppo_ray", *flags]
    exec(compile(ast.Module(body=main.body, type_ignores=[]), str(source), "exec"), namespace)
    return captured[0]


class Engine:
    """Stands in for vLLM's engine: each generate() returns the prompt's next completion."""

    def __init__(self, tokenizer: Any, completions: dict[str, list[str]]) -> None:
        self.tokenizer = tokenizer
        self.queues = {prompt: list(texts) for prompt, texts in completions.items()}
        self.by_ids = {tuple(tokenizer(text=p, add_special_tokens=False)["input_ids"]): p
                       for p in completions}  # fmt: skip

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any,
                       multi_modal_data: Any = None) -> Any:  # fmt: skip
        await asyncio.sleep(0.01 * len(self.queues[self.by_ids[tuple(prompt_token_ids)]]))
        text = self.queues[self.by_ids[tuple(prompt_token_ids)]].pop(0)
        ids = self.tokenizer(text=text, add_special_tokens=False)["input_ids"]
        out = SimpleNamespace(token_ids=ids, text=text, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[out])


async def rollouts_011(args: Any, tokenizer: Any, rollouts: list[dict[str, Any]]) -> list[Any]:
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
    from openrlhf.trainer.ray.vllm_engine import RolloutRayActor
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from vllm import SamplingParams

    engine = Engine(tokenizer, {r["prompt"]: r["responses"] for r in rollouts})
    actor = SimpleNamespace(executor=SingleTurnAgentExecutor(args.reward.remote_url),
                            generate=engine.generate)  # fmt: skip
    n = args.rollout.n_samples_per_prompt
    params = SamplingParams(max_tokens=256)
    # The Ray actor's own class (outside a Ray cluster): its generate_responses as written.
    generate = RolloutRayActor.__ray_metadata__.modified_class.generate_responses
    answers = await asyncio.gather(*(
        generate(actor, prompt=r["prompt"], label=r["label"], sampling_params=params,
                 max_length=1024, hf_tokenizer=tokenizer, num_samples=n)
        for r in rollouts
    ))  # fmt: skip
    out = []
    for responses in answers:
        experiences = [SamplesGenerator._process_response_into_experience(None, x, max_len=1024)
                       for x in responses]  # fmt: skip
        out.append({
            "rewards": [None if e.rewards is None else e.rewards.flatten().tolist()[0]
                        for e in experiences],
            "scores": [None if e.scores is None else e.scores.flatten().tolist()[0]
                       for e in experiences],
            "extra_logs": [{k: v.flatten().tolist()[0] for k, v in e.info.items()
                            if k.startswith("referee/")} for e in experiences],
            "responses": [tokenizer.decode(x["observation_tokens"][x["action_ranges"][0][0]:])
                          for x in responses],
        })  # fmt: skip
    return out


def rollouts_09(args: Any, tokenizer: Any, rollouts: list[dict[str, Any]]) -> list[Any]:
    from openrlhf.utils.remote_rm_utils import request_api_wrapper

    queries, prompts, labels = [], [], []
    for r in rollouts:
        for text in r["responses"]:
            queries.append(r["prompt"] + text)
            prompts.append(r["prompt"])
            labels.append(r["label"])
    url = args.remote_rm_url[0]
    body = request_api_wrapper(url, {"query": queries, "prompts": prompts, "labels": labels})
    n = len(rollouts[0]["responses"])
    return [{"rewards": body["rewards"][i * n:(i + 1) * n],
             "scores": body["scores"][i * n:(i + 1) * n]} for i in range(len(rollouts))]  # fmt: skip


def main() -> None:
    data = json.load(sys.stdin)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data["tokenizer"])
    version = metadata.version("openrlhf")
    args = parse_flags(sys.argv[1:])
    if version.startswith("0.9."):
        result = rollouts_09(args, tokenizer, data["rollouts"])
        flags = {"remote_url": args.remote_rm_url, "label_key": args.label_key}
    else:
        result = asyncio.run(rollouts_011(args, tokenizer, data["rollouts"]))
        flags = {"remote_url": args.reward.remote_url, "label_key": args.data.label_key,
                 "n_samples_per_prompt": args.rollout.n_samples_per_prompt}  # fmt: skip
    print(json.dumps({"openrlhf": version, "flags": flags, "prompts": result}))


if __name__ == "__main__":
    main()
