"""The documentation site builds with `mkdocs build --strict` (broken links, missing
anchors and pages left out of the nav fail it), every code sample that could run is
either run by a test or explicitly excused, and every YAML config sample loads."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from referee.config import default_config_path, load_settings
from tests.doc_blocks import ROOT, RUNNABLE_LANGUAGES, Block, blocks, doc_files

MARKERS = {"shell", "python", "output", "config", "config-fragment", "skip", "test"}
ALL_BLOCKS = [b for path in doc_files() for b in blocks(path)]
CONFIGS = [b for b in ALL_BLOCKS if b.marker in ("config", "config-fragment")]


def test_mkdocs_build_strict_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reference" / "config" / "index.html").is_file()
    # the pages that include files from elsewhere in the repository got their text
    performance = (tmp_path / "performance" / "index.html").read_text()
    assert "Recorded benchmark results" in performance
    assert "What the chart makes" in (tmp_path / "deployment" / "helm" / "index.html").read_text()


def test_every_sample_that_could_run_is_marked() -> None:
    unmarked = [b.where for b in ALL_BLOCKS if b.language in RUNNABLE_LANGUAGES and not b.marker]
    assert unmarked == [], "mark these blocks (see tests/doc_blocks.py)"
    unknown = [(b.where, b.marker) for b in ALL_BLOCKS if b.marker and b.marker not in MARKERS]
    assert unknown == []
    unexplained = [b.where for b in ALL_BLOCKS if b.marker == "skip" and not b.reason]
    assert unexplained == [], "a skipped sample says why: <!-- doctest: skip (reason) -->"
    for block in (b for b in ALL_BLOCKS if b.marker == "test"):  # run by the test it names
        found = re.fullmatch(r"(tests/\S+\.py): ([\w.-]+)", block.reason or "")
        assert found, f"{block.where}: <!-- doctest: test (tests/PATH.py: ID) -->"
        test_file = ROOT / found.group(1)
        assert test_file.is_file(), f"{block.where}: {found.group(1)} does not exist"
        assert found.group(2) in test_file.read_text(), f"{block.where}: the test never reads it"
    # the runnable kinds are really there (a parser that found nothing would pass the rest)
    kinds = {b.marker for b in ALL_BLOCKS}
    assert {"shell", "python", "output", "config", "config-fragment"} <= kinds


def test_output_blocks_follow_a_shell_block() -> None:
    for i, block in enumerate(ALL_BLOCKS):
        if block.marker == "output":
            before = ALL_BLOCKS[i - 1]
            assert before.path == block.path and before.marker == "shell", block.where


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("block", CONFIGS, ids=[b.where for b in CONFIGS])
def test_config_sample_loads(block: Block) -> None:
    data = yaml.safe_load(block.text)
    assert isinstance(data, dict), f"{block.where}: not a mapping"
    if block.marker == "config-fragment":
        data = _merge(yaml.safe_load(default_config_path().read_text()), data)
    settings = load_settings(data=data, environ={})
    for section, value in yaml.safe_load(block.text).items():
        assert getattr(settings, section) is not None, (block.where, section)
        if section == "scorers":
            assert set(value) <= set(settings.scorers)


def test_a_bad_config_sample_would_fail() -> None:
    """The check is not a formality: a sample with a wrong option is refused."""
    from referee.config import ConfigError

    bad = {"scorers": {"math": {"kind": "math", "options": {"timeout_s": -1}}}}
    with pytest.raises(ConfigError, match=r"scorers\.math"):
        load_settings(data=_merge(yaml.safe_load(default_config_path().read_text()), bad),
                      environ={})  # fmt: skip


def test_readme_links_point_at_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 10
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert missing == []
