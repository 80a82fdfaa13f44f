"""`referee --help` and each subcommand's help, as the installed console script prints
them, are what docs/reference/cli.md shows (and every subcommand is documented)."""

from __future__ import annotations

import re

import pytest
from scripts._docgen_api import CLI_ENV, cli_commands, plain_help

from tests.doc_blocks import ROOT
from tests.e2e.server import cli

PAGE = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
DOCUMENTED = dict(re.findall(r"^## `(referee(?: \w+)?)`\n\n```text\n(.*?)```", PAGE, re.M | re.S))


def test_every_subcommand_is_documented() -> None:
    commands = cli_commands()
    assert {"serve", "score", "validate", "pipelines"} <= set(commands)
    assert set(DOCUMENTED) == {"referee", *(f"referee {c}" for c in commands)}


@pytest.mark.parametrize("command", sorted(DOCUMENTED))
def test_help_of_the_console_script_matches_the_docs(command: str) -> None:
    args = command.split()[1:]
    result = cli(*args, "--help", env=CLI_ENV)
    assert result.returncode == 0, result.stderr
    assert plain_help(result.stdout) == DOCUMENTED[command], (
        f"`{command} --help` differs from docs/reference/cli.md: run `python scripts/gen_docs.py`"
    )


def test_every_option_has_help_text() -> None:
    """An option without help shows an empty description in `--help` and in the docs."""
    import typer

    from referee.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"referee {name} {param.opts[0]} has no help"
