"""Runs TRL's own reward calculation against a Referee server, in a process whose path holds
one TRL release (tests/trainers/install.sh).

    python -m tests.trainers.run_trl < spec.json

``GRPOTrainer._calculate_rewards`` (TRL's code: sync reward functions called in turn,
async ones gathered on the trainer's event loop, None -> NaN, then accelerate's
``gather``) runs on this process's share of a generation batch: the batch of
``num_generations`` completions per prompt, cut into ``processes`` contiguous shares as
TRL's sampler spreads it over processes, so a prompt's completions can straddle two
processes. The trainer object holds only what that method reads (no model is needed to
compute rewards); the event loop is TRL's own ``start_event_loop_in_daemon``.

spec: ``{"url", "api_key", "rollouts", "process": [K, N], "async": bool, "group_size"}``.
Prints one JSON line: this process's rewards, in batch order.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace


def main() -> None:
    spec = json.load(sys.stdin)
    import torch
    from accelerate import Accelerator
    from transformers import TrainerState
    from trl import GRPOTrainer
    from trl.trainer.utils import start_event_loop_in_daemon

    from referee_client.adapters.trl import AsyncRefereeReward, RefereeReward

    cls = AsyncRefereeReward if spec["async"] else RefereeReward
    reward = cls(spec["url"], api_key=spec["api_key"], pipeline="math_rl",
                 group_size=spec["group_size"])  # fmt: skip
    rows = [(r["prompt"], text, r["label"]) for r in spec["rollouts"] for text in r["responses"]]
    k, n = spec["process"]
    share = len(rows) // n
    mine = rows[k * share : (k + 1) * share]
    _thread, loop, ready = start_event_loop_in_daemon(name="trl-test-loop")
    ready.wait()
    state = TrainerState()
    state.global_step = 7
    trainer = SimpleNamespace(
        accelerator=Accelerator(cpu=True), reward_funcs=[reward],
        reward_processing_classes=[None], reward_func_names=[reward.__name__], state=state,
        args=SimpleNamespace(report_to=[]), _log_completion_extra=lambda *a, **k: None,
        _log_metric=lambda *a, **k: None, environments=None, async_loop=loop,
        chat_template_kwargs={},
    )  # fmt: skip
    inputs = [{"prompt": p, "completion": c, "solution": s} for p, c, s in mine]
    rewards = GRPOTrainer._calculate_rewards(
        trainer, inputs, [p for p, _, _ in mine], [c for _, c, _ in mine], [[1]] * len(mine)
    )
    loop.call_soon_threadsafe(loop.stop)
    values = [None if torch.isnan(v) else float(v) for v in rewards[:, 0]]
    print(json.dumps({"process": [k, n], "rewards": values}))


if __name__ == "__main__":
    main()
