"""verl's own reward code against a real `referee serve`: the recipes of
docs/trainers/verl.md run as written (bash), with ``python -m verl.trainer.main_ppo``
composing the overrides with verl's Hydra config and running its reward loader, reward
loop workers and reward managers on a fixed rollout batch (tests/trainers/run_verl.py).
verl 0.9's batch is split over two worker processes as its RewardLoopManager splits it,
so one prompt's rollouts reach the server from two processes. The rewards verl ends up
with must equal those of each prompt's whole group sent in one request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainers.conftest import KEY, ROLLOUTS, recipe, trainer_env, whole_group_rewards

ROOT = Path(__file__).resolve().parents[2]


def run_recipe(name: str, trainer: str, server: str, tokenizer: Path, workdir: Path,
               workers: int = 1) -> list[dict[str, object]]:  # fmt: skip
    stdin = workdir / f"{name}.json"
    stdin.write_text(json.dumps({"tokenizer": str(tokenizer), "rollouts": ROLLOUTS}))
    out = workdir / name
    py = sys.executable
    shim = (
        'python() { if [ "$1" = -m ] && [ "$2" = verl.trainer.main_ppo ]; then shift 2; pids=; '
        f'for k in $(seq 0 {workers - 1}); do "{py}" -m tests.trainers.run_verl '
        f'--worker $k/{workers} "$@" < "{stdin}" > "{out}.$k" & pids="$pids $!"; done; '
        "for p in $pids; do wait $p; done; "
        f'else "{py}" "$@"; fi; }}\n'
    )
    script = "set -e\n" + shim + recipe("verl", name).replace("http://referee:8000", server)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=400,
                          env={**trainer_env(trainer), "REFEREE_API_KEY": KEY}, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = []
    for k in range(workers):
        lines = [x for x in Path(f"{out}.{k}").read_text().splitlines() if x.startswith("{")]
        assert lines, proc.stderr[-3000:]
        results.append(json.loads(lines[-1]))
    return results


def check(rewards: list[float], server: str) -> None:
    expected = [r for group in whole_group_rewards(server) for r in group]
    assert rewards == pytest.approx(expected, abs=1e-5)
    assert rewards[0] > 0 > rewards[1]  # right above wrong, and really normalised
    for g in range(len(ROLLOUTS)):
        assert abs(sum(rewards[g * 4 : (g + 1) * 4])) < 1e-4


def test_verl_09_recipe_async_reward_with_uid_groups_over_two_worker_processes(
    server: str, tokenizer_dir: Path, workdir: Path
) -> None:
    parts = run_recipe("verl-0.9", "verl-0.9.1", server, tokenizer_dir, workdir, workers=2)
    assert {p["verl"] for p in parts} == {"0.9.1"}
    assert parts[0]["manager"] == "RefereeRewardManager"
    rewards = [r for p in parts for r in p["rewards"]]  # type: ignore[attr-defined]
    check(rewards, server)


def test_verl_06_recipe_batch_manager(server: str, tokenizer_dir: Path, workdir: Path) -> None:
    (part,) = run_recipe("verl-0.6", "verl-0.6.1", server, tokenizer_dir, workdir)
    assert part["verl"] == "0.6.1" and part["manager"] == "batch"
    check(part["rewards"], server)  # type: ignore[arg-type]


def test_verl_09_ignores_the_old_keys_so_the_recipe_uses_the_new_ones(
    tokenizer_dir: Path,
) -> None:
    """Why the README changed: verl 0.9 composes the old keys without complaint but its
    reward loop reads only reward.*: nothing would call Referee."""
    proc = subprocess.run(
        [sys.executable, "-c", (
            "import sys; from tests.trainers.run_verl import compose; "
            "c = compose(sys.argv[2:], sys.argv[1]); "
            "print(c.reward.custom_reward_function.path, c.reward.reward_manager.name)"
        ), str(tokenizer_dir), "custom_reward_function.path=/x.py",
         "reward_model.reward_manager=batch"],
        capture_output=True, text=True, timeout=120, env=trainer_env("verl-0.9.1"), cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["None", "naive"]
