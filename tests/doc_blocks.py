"""The fenced code blocks of README.md and docs/, with the doctest marker before each.

A block that can run here is marked on the line just before its fence:

    <!-- doctest: shell -->     run with bash against a real `referee serve` (default config)
    <!-- doctest: python -->    run with this interpreter against the same server
    <!-- doctest: output -->    JSON the shell block before it prints (results compared)
    <!-- doctest: config -->    a whole config file: load_settings must accept it
    <!-- doctest: config-fragment -->  merged over the embedded default config, then loaded
    <!-- doctest: skip (why) --> cannot run here; the reason says why and what tests it
    <!-- doctest: test (tests/PATH.py: ID) -->  run by that test, which finds the block by ID

Blocks in a language that could run (bash, sh, console, python, yaml, yml, json) must
carry a marker, so a new sample is either run or explicitly excused. `text` blocks
(diagrams, help output, trees) need none. Files included with `--8<--` (helm/README.md,
benchmarks/RESULTS.md) are not parsed here: they are tested where they live.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "RUNNABLE_LANGUAGES", "Block", "blocks", "doc_files"]

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE_LANGUAGES = frozenset({"bash", "sh", "shell", "console", "python", "yaml", "yml", "json"})
_MARKER = re.compile(r"^\s*<!--\s*doctest:\s*([a-z-]+)(?:\s*\((.+)\))?\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


@dataclass(frozen=True)
class Block:
    path: Path  # relative to the repository root
    line: int  # 1-based line of the opening fence
    language: str
    marker: str | None  # shell, python, output, config, config-fragment, skip, test
    reason: str | None  # the skip reason; for `test`, "tests/PATH.py: ID"
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files() -> list[Path]:
    """README.md and every Markdown page under docs/, relative to the repository root."""
    pages = sorted(p.relative_to(ROOT) for p in (ROOT / "docs").rglob("*.md"))
    return [Path("README.md"), *pages]


def blocks(path: Path) -> Iterator[Block]:
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        _, ticks, language = fence.groups()
        marker = reason = None
        previous = lines[i - 1] if i > 0 else ""
        found = _MARKER.match(previous)
        if found:
            marker, reason = found.group(1), found.group(2)
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(ticks):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{i + 1}: unclosed code fence")
        body = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
        yield Block(path, i + 1, language.lower(), marker, reason, body)
        i = end + 1
