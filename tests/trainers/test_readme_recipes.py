"""The README's trainer snippets (if it has any) are short forms of the recipes in
docs/trainers/, which the tests in this directory run: every flag, config key and keyword
argument a README snippet for a trainer shows must appear in that trainer's tested recipe
(so the README cannot drift back to flags a trainer refuses or ignores)."""

from __future__ import annotations

import re

import pytest

from tests.trainers.conftest import ROOT, recipe

# A README code block is a trainer's snippet when it names the trainer's entry point.
RECIPES = {
    "openrlhf.cli.train_ppo_ray": [("openrlhf", "openrlhf-0.11"), ("openrlhf", "openrlhf-0.9")],
    "verl.trainer.main_ppo": [("verl", "verl-0.9"), ("verl", "verl-0.6")],
    "GRPOTrainer": [("trl", "trl-grpo")],
}
STALE = ("--remote_rm_url", "--label_key", "reward_model.reward_manager=batch")


def readme_blocks() -> list[str]:
    return re.findall(r"```\w*\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def settings(block: str) -> set[str]:
    """--flags, key=value (Hydra and Python keyword arguments) and URLs in a snippet."""
    found = set(re.findall(r"(?<![\w-])--[\w.]+", block))
    found |= {m for m in re.findall(r"(?<![\w.])\+?[\w.]+=[^\s,)\\]+", block) if "(" not in m}
    found |= set(re.findall(r"https?://[^\s\"']+", block))
    return found


@pytest.mark.parametrize("entry", sorted(RECIPES))
def test_readme_trainer_snippets_use_only_what_the_tested_recipes_use(entry: str) -> None:
    tested = "\n".join(recipe(page, name) for page, name in RECIPES[entry])
    for block in (b for b in readme_blocks() if entry in b):
        missing = sorted(s for s in settings(block) if s not in tested)
        assert not missing, f"README's {entry} snippet shows {missing}, which no tested recipe has"
        if entry != "openrlhf.cli.train_ppo_ray" or "--reward.remote_url" in block:
            stale = [s for s in STALE if s in block]
            assert not stale, (
                f"README's {entry} snippet uses {stale}, which today's release ignores"
            )


def test_the_snippet_check_catches_an_old_flag() -> None:
    """The check above on a README snippet as it was before these recipes."""
    old = '--remote_rm_url "http://referee:8000/openrlhf/math_rl" --label_key answer --x.y 1'
    tested = recipe("openrlhf", "openrlhf-0.11")
    assert "--x.y" in settings(old) and "--x.y" not in tested
