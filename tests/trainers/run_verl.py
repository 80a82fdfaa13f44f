"""Runs verl's own reward code against a Referee server, in a process whose path holds one
verl release (tests/trainers/install.sh).

    python -m tests.trainers.run_verl [--worker K/N] HYDRA_OVERRIDES... < rollouts.json

1. The overrides are composed with verl's own ``ppo_trainer.yaml`` (Hydra), as
   ``python -m verl.trainer.main_ppo`` does: a key verl does not have fails here.
2. verl >= 0.7: a real ``RewardLoopWorker`` (verl's reward-function loader and reward
   manager, from the composed config) scores this process's chunk of the batch with
   ``compute_score_batch`` (one ``run_single`` per rollout, all awaited at once), the
   chunk cut by verl's own ``pad_dataproto_to_divisor`` / ``chunk`` as
   ``RewardLoopManager.compute_rm_score`` cuts it for N workers (here: N processes);
   the token-level tensor comes from the manager's ``assemble_rm_scores``.
   verl <= 0.6: ``load_reward_manager`` and the manager's ``__call__`` on the whole batch.
3. Prints one JSON line: each rollout's reward (the sum of its token-level rewards).

stdin: ``{"tokenizer": DIR, "rollouts": [{"prompt", "label", "responses": [...]}]}``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def compose(overrides: list[str], tokenizer: str) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    spec = importlib.util.find_spec("verl")
    assert spec is not None and spec.origin is not None
    config_dir = Path(spec.origin).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return hydra_compose("ppo_trainer", overrides=[
            *overrides, f"actor_rollout_ref.model.path={tokenizer}",
        ])  # fmt: skip


def batch(tokenizer: Any, rollouts: list[dict[str, Any]]) -> Any:
    """A rollout batch shaped as verl's trainer hands it to the reward code."""
    import numpy as np
    import torch
    from verl import DataProto

    rows = [(g, r, text) for g, r in enumerate(rollouts) for text in r["responses"]]
    prompts = [tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] for _, r, _ in rows]
    responses = [tokenizer(t, add_special_tokens=False)["input_ids"] for _, _, t in rows]
    p_len, r_len = max(map(len, prompts)), max(map(len, responses))
    pad = tokenizer.pad_token_id or 0
    prompt_ids = torch.tensor([[pad] * (p_len - len(p)) + p for p in prompts])
    response_ids = torch.tensor([r + [pad] * (r_len - len(r)) for r in responses])
    mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (r_len - len(r))
                         for p, r in zip(prompts, responses, strict=True)])  # fmt: skip

    def column(values: list[Any]) -> Any:
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out

    return DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": response_ids, "attention_mask": mask,
                 "input_ids": torch.cat([prompt_ids, response_ids], dim=1)},
        non_tensors={
            "data_source": column(["math"] * len(rows)),
            "reward_model": column([{"ground_truth": r["label"], "style": "rule"}
                                    for _, r, _ in rows]),
            "extra_info": column([{"index": g, "split": "train"} for g, _, _ in rows]),
            "uid": column([f"uid-{g}" for g, _, _ in rows]),
        },
    )  # fmt: skip


def rewards_07(config: Any, data: Any, worker: tuple[int, int]) -> list[float]:
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.protocol import pad_dataproto_to_divisor

    k, n = worker
    padded, pad_size = pad_dataproto_to_divisor(data, n)
    chunk = padded.chunk(n)[k]
    loop_worker = RewardLoopWorker(config)
    outputs = loop_worker.loop.run_until_complete(loop_worker.compute_score_batch(chunk))
    scores = [o["reward_score"] for o in outputs]
    manager_cls = type(loop_worker.reward_manager)
    token_level = manager_cls.assemble_rm_scores(chunk, scores)
    rewards = token_level.sum(dim=-1).tolist()
    size = len(chunk) - (pad_size if k == n - 1 else 0)
    return list(rewards[:size])


def rewards_06(config: Any, tokenizer: Any, data: Any) -> list[float]:
    from verl.trainer.ppo.reward import load_reward_manager

    reward_kwargs = config.reward_model.get("reward_kwargs", {})
    manager = load_reward_manager(config, tokenizer, num_examine=0, **reward_kwargs)
    out = manager(data, return_dict=True)
    return list(out["reward_tensor"].sum(dim=-1).tolist())


def main() -> None:
    args = sys.argv[1:]
    worker = (0, 1)
    if args[:1] == ["--worker"]:
        k, n = args[1].split("/")
        worker, args = (int(k), int(n)), args[2:]
    data_in = json.load(sys.stdin)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data_in["tokenizer"])
    version = metadata.version("verl")
    config = compose(args, data_in["tokenizer"])
    data = batch(tokenizer, data_in["rollouts"])
    if version.startswith("0.6."):
        rewards = rewards_06(config, tokenizer, data)
        manager = config.reward_model.reward_manager
    else:
        asyncio.set_event_loop(asyncio.new_event_loop())
        rewards = rewards_07(config, data, worker)
        manager = config.reward.reward_manager.name
    print(json.dumps({"verl": version, "manager": manager, "worker": list(worker),
                      "rewards": rewards}))  # fmt: skip


if __name__ == "__main__":
    main()
