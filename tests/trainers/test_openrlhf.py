"""OpenRLHF's own code against a real `referee serve`: the recipes of
docs/trainers/openrlhf.md run as written (bash, the curl probe for real), with
``python -m openrlhf.cli.train_ppo_ray`` running OpenRLHF's argument parser and then its
rollout executor / experience code on fixed completions (tests/trainers/run_openrlhf.py;
vLLM, GPU-only, is the one stand-in). The rewards OpenRLHF ends up with must equal those
of each prompt's whole group sent in one request."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.trainers.conftest import (
    GROUP,
    KEY,
    ROLLOUTS,
    recipe,
    trainer_env,
    whole_group_rewards,
)


def run_recipe(name: str, trainer: str, server: str, tokenizer: Path, workdir: Path,
               key: str = KEY) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The recipe's bash, with the server's URL for http://referee:8000 and `python -m
    openrlhf.cli.train_ppo_ray` running OpenRLHF's code (run_openrlhf.py)."""
    stdin = workdir / f"{name}.json"
    stdin.write_text(json.dumps({"tokenizer": str(tokenizer), "rollouts": ROLLOUTS}))
    shim = (
        'python() { if [ "$1" = -m ] && [ "$2" = openrlhf.cli.train_ppo_ray ]; then shift 2; '
        f'"{sys.executable}" -m tests.trainers.run_openrlhf "$@" < "{stdin}"; '
        'else command python "$@"; fi; }\n'
    )
    script = shim + recipe("openrlhf", name).replace("http://referee:8000", server)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300,
                          env={**trainer_env(trainer), "REFEREE_API_KEY": key},
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"openrlhf"')]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def groups_completed(server: str) -> float:
    text = httpx.get(f"{server}/metrics").text
    found = re.findall(r'^referee_groups_total{outcome="complete",pipeline="math_rl"} (\S+)$',
                       text, re.M)  # fmt: skip
    return float(found[0]) if found else 0.0


def check_rewards(result: dict[str, object], server: str) -> None:
    expected = whole_group_rewards(server)
    prompts = result["prompts"]
    assert isinstance(prompts, list)
    for got, want, rollout in zip(prompts, expected, ROLLOUTS, strict=True):
        assert got.get("responses", rollout["responses"]) == rollout["responses"]
        assert got["rewards"] == pytest.approx(want, abs=1e-5)
        assert got["scores"] == pytest.approx(want, abs=1e-5)
    # right answers above wrong ones, and real normalisation (not the 0.0 of a group of one)
    first = prompts[0]["rewards"]
    assert first[0] > 0 and first[3] > 0 and first[1] < 0 and first[2] < 0
    assert all(abs(sum(p["rewards"])) < 1e-4 for p in prompts)


def test_openrlhf_011_recipe_per_rollout_posts_get_the_whole_group_rewards(
    server: str, tokenizer_dir: Path, workdir: Path
) -> None:
    before = groups_completed(server)
    result = result_of(run_recipe("openrlhf-0.11", "openrlhf-0.11.2", server, tokenizer_dir,
                                  workdir))  # fmt: skip
    assert result["openrlhf"] == "0.11.2"
    flags = result["flags"]
    assert isinstance(flags, dict) and flags["label_key"] == "answer"
    assert flags["n_samples_per_prompt"] == GROUP
    assert flags["remote_url"] == [f"{server}/openrlhf/math_rl?group_size={GROUP}&api_key={KEY}"]
    check_rewards(result, server)
    # each prompt's rollouts came one per POST and were assembled into one group
    assert groups_completed(server) - before == len(ROLLOUTS)
    logs = result["prompts"][0]["extra_logs"]  # type: ignore[index]
    assert logs[0]["referee/error"] == 0.0 and logs[0]["referee/correct_if_formatted"] == 1.0


def test_openrlhf_09_recipe_one_post_per_batch(
    server: str, tokenizer_dir: Path, workdir: Path
) -> None:
    result = result_of(run_recipe("openrlhf-0.9", "openrlhf-0.9.0", server, tokenizer_dir,
                                  workdir))  # fmt: skip
    assert result["openrlhf"] == "0.9.0"
    check_rewards(result, server)


def test_openrlhf_011_recipe_stops_at_the_probe_on_a_wrong_key(
    server: str, tokenizer_dir: Path, workdir: Path
) -> None:
    proc = run_recipe("openrlhf-0.11", "openrlhf-0.11.2", server, tokenizer_dir, workdir,
                      key="wrong")  # fmt: skip
    assert proc.returncode == 22  # curl --fail-with-body: the trainer never starts
    assert "invalid API key" in proc.stdout + proc.stderr
    assert "?api_key=KEY" in proc.stdout + proc.stderr  # says how OpenRLHF must send it
    assert '{"openrlhf"' not in proc.stdout


def test_openrlhf_old_flags_are_refused_by_its_own_parser(
    tokenizer_dir: Path, workdir: Path
) -> None:
    """Why the README changed: 0.11's parser refuses the 0.9 spelling."""
    stdin = json.dumps({"tokenizer": str(tokenizer_dir), "rollouts": ROLLOUTS})
    proc = subprocess.run(
        [sys.executable, "-m", "tests.trainers.run_openrlhf", "--remote_rm_url", "http://x",
         "--label_key", "answer"], input=stdin, capture_output=True, text=True, timeout=120,
        env=trainer_env("openrlhf-0.11.2"), cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode == 2 and "unrecognized arguments: --remote_rm_url" in proc.stderr


@pytest.mark.slow
def test_openrlhf_011_logs_a_401_where_the_user_sees_it(
    server: str, tokenizer_dir: Path, workdir: Path
) -> None:
    """Without the probe: OpenRLHF logs the 401 status line at INFO (its logger prints
    INFO to stdout) and ends up with rollouts that have no reward."""
    flags = ["--reward.remote_url", f"{server}/openrlhf/math_rl?group_size={GROUP}&api_key=bad",
             "--rollout.n_samples_per_prompt", "1", "--data.label_key", "answer",
             "--actor.model_name_or_path", "m"]  # fmt: skip
    stdin = json.dumps({"tokenizer": str(tokenizer_dir), "rollouts": [
        {**ROLLOUTS[0], "responses": ROLLOUTS[0]["responses"][:1]}]})  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "tests.trainers.run_openrlhf", *flags], input=stdin,
        capture_output=True, text=True, timeout=120, env=trainer_env("openrlhf-0.11.2"),
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Request error, please check: 401, message='Unauthorized'" in proc.stdout
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["prompts"][0]["rewards"] == [None]


def test_openrlhf_probe_answers_what_the_docs_show(server: str) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs/trainers/openrlhf.md").read_text()
    marker = r"<!-- doctest: test \(tests/trainers/test_openrlhf.py: probe-answer\) -->"
    shown = re.search(marker + r"\s*```json\n(.*?)```", page, re.S)
    assert shown is not None
    pairs = dict(re.findall(r'"(\w+)": ("[^"]*"|[\w.]+)', shown.group(1)))
    answer = httpx.get(f"{server}/openrlhf/math_rl?group_size={GROUP}&api_key={KEY}").json()
    assert pairs and {k: json.loads(v) for k, v in pairs.items()} == {k: answer[k] for k in pairs}
    assert httpx.get(f"{server}/openrlhf/nope?api_key={KEY}").status_code == 404
