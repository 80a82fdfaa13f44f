"""The README's trainer snippets are short forms of the recipes in docs/trainers/, which
the tests in this directory run: every flag, config key and keyword argument the README
shows must appear in the tested recipe of that trainer (so the README cannot drift back
to flags a trainer refuses or ignores)."""

from __future__ import annotations

import re

import pytest

from tests.trainers.conftest import ROOT, recipe

RECIPES = {"TRL": [("trl", "trl-grpo")], "verl": [("verl", "verl-0.9")],
           "OpenRLHF": [("openrlhf", "openrlhf-0.11")]}  # fmt: skip


def readme_blocks(trainer: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Trainers\n", 1)[1].split("\n## ", 1)[0]
    part = re.split(r"\n### ", section)
    body = next(p for p in part if p.startswith(trainer))
    return re.findall(r"```\w*\n(.*?)```", body, re.S)


def settings(block: str) -> set[str]:
    """--flags, key=value (Hydra and Python keyword arguments) and URLs in a snippet."""
    found = set(re.findall(r"(?<![\w-])--[\w.]+", block))
    found |= {m for m in re.findall(r"(?<![\w.])\+?[\w.]+=[^\s,)\\]+", block) if "(" not in m}
    found |= set(re.findall(r"https?://[^\s\"']+", block))
    return found


@pytest.mark.parametrize("trainer", sorted(RECIPES))
def test_readme_trainer_snippets_use_only_what_the_tested_recipes_use(trainer: str) -> None:
    tested = "\n".join(recipe(page, name) for page, name in RECIPES[trainer])
    blocks = readme_blocks(trainer)
    assert blocks, f"README has no {trainer} snippet"
    for block in blocks:
        shown = settings(block)
        assert shown, block
        missing = sorted(s for s in shown if s not in tested)
        assert not missing, (
            f"README's {trainer} snippet shows {missing}, which no tested recipe has"
        )
