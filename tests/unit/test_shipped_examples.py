"""Finding 8: a shipped example reward function must not touch paths taken from a request
(one that did, `gated_reward`, was a file-existence oracle once configured). Checked two
ways over every function the package ships under ``referee.examples``: the source uses no
filesystem API, and each function gives the same answer whether a path in the request
exists or not."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import referee.examples
from referee.scorers.rules.python import PythonScorer
from tests.support import score_input

FILESYSTEM_MODULES = {"os", "pathlib", "shutil", "glob", "io", "subprocess", "tempfile"}
FILESYSTEM_CALLS = {"open", "Path", "exists", "is_file", "is_dir", "stat", "listdir",
                    "scandir", "read_text", "read_bytes", "iterdir", "access", "lstat"}  # fmt: skip


def shipped_modules() -> list[str]:
    return [f"referee.examples.{m.name}" for m in pkgutil.iter_modules(referee.examples.__path__)]


def shipped_functions() -> list[str]:
    out = []
    for name in shipped_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isfunction(value) and value.__module__ == name and not attr.startswith("_"):
                out.append(f"{name}:{attr}")
    return out


def test_the_examples_package_ships_functions_to_check() -> None:
    assert len(shipped_functions()) >= 5


@pytest.mark.parametrize("module", shipped_modules())
def test_shipped_examples_use_no_filesystem_api(module: str) -> None:
    source = Path(importlib.import_module(module).__file__ or "").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            assert not {n.split(".")[0] for n in names} & FILESYSTEM_MODULES, (
                f"{module} imports {names}"
            )
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            assert name not in FILESYSTEM_CALLS, f"{module} calls {name}() (line {node.lineno})"


@pytest.mark.parametrize("function", shipped_functions())
async def test_no_shipped_example_answers_differently_for_an_existing_path(
    function: str, tmp_path: Path
) -> None:
    present = tmp_path / "present"
    present.write_text("x")
    absent = tmp_path / "absent"
    scorer = PythonScorer("p", PythonScorer.Options(function=function))
    await scorer.setup()

    def probe(path: Path) -> object:
        text = str(path)
        return score_input(text, reference=text, prompt=text, group=text,
                           metadata={"gate": text, "path": text, "file": text})  # fmt: skip

    try:
        with_file, without = await scorer.score_batch([probe(present), probe(absent)])
    finally:
        await scorer.close()
    # Same length paths ("present"/"absent" both 7 characters) so length-based rewards agree.
    assert (with_file.value, with_file.aspects, with_file.error) == (
        without.value,
        without.aspects,
        (without.error or "").replace("absent", "present") or None,
    )
