"""Every runnable sample of README.md and docs/ runs against a real `referee serve`
subprocess on the embedded default config (HTTP and gRPC): shell blocks with bash, Python
blocks with this interpreter, and a shell block followed by an output block must print
those results. Addresses in the samples (localhost:8000, 127.0.0.1:8000, :50051) are
pointed at the test server's free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.doc_blocks import ROOT, Block, blocks, doc_files
from tests.e2e.server import free_port, running_server

ALL_BLOCKS = [b for path in doc_files() for b in blocks(path)]
RUNNABLE = [
    (block, ALL_BLOCKS[i + 1] if i + 1 < len(ALL_BLOCKS) and ALL_BLOCKS[i + 1].marker == "output" else None)
    for i, block in enumerate(ALL_BLOCKS)
    if block.marker in ("shell", "python")
]  # fmt: skip


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    grpc_port = free_port()
    with running_server("--grpc-port", str(grpc_port)) as (url, _):
        yield int(url.rsplit(":", 1)[1]), grpc_port


def _point_at(text: str, http_port: int, grpc_port: int) -> str:
    for host in ("localhost", "127.0.0.1"):
        text = text.replace(f"{host}:8000", f"127.0.0.1:{http_port}")
        text = text.replace(f"{host}:50051", f"127.0.0.1:{grpc_port}")
    return text


def _results(payload: dict[str, Any]) -> list[dict[str, Any]]:
    results = payload["results"]
    for result in results:
        result["cached"] = False  # another sample may have scored the same item first
    return results


@pytest.mark.parametrize(
    ("block", "output"), RUNNABLE, ids=[f"{b.where}-{b.marker}" for b, _ in RUNNABLE]
)
def test_doc_sample_runs(block: Block, output: Block | None, ports: tuple[int, int]) -> None:
    code = _point_at(block.text, *ports)
    assert code != block.text or "8000" not in block.text
    if block.marker == "shell":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        command = [sys.executable, "-c", code]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert run.returncode == 0, f"{block.where} failed:\n{run.stdout}\n{run.stderr}"
    if block.marker == "shell":
        assert run.stdout.strip(), f"{block.where} printed nothing"
        try:
            printed = json.loads(run.stdout)
        except json.JSONDecodeError:
            printed = None  # text output (Prometheus metrics)
        if isinstance(printed, dict):
            assert "error" not in printed or printed.get("status") == "ready", printed
        if output is not None:
            shown = json.loads(output.text)
            assert isinstance(printed, dict), run.stdout
            assert _results(printed) == _results(shown), f"{output.where} differs from the server"
            assert printed["usage"]["items"] == shown["usage"]["items"]
            assert str(printed["pipeline_version"]).startswith("sha256:")


def test_samples_were_collected() -> None:
    """README's curl with its output, and Python samples over HTTP and gRPC, are here."""
    where = {(b.path.as_posix(), b.marker, o is not None) for b, o in RUNNABLE}
    assert ("README.md", "shell", True) in where
    assert ("README.md", "python", False) in where
    assert ("docs/api/grpc.md", "python", False) in where
    assert len(RUNNABLE) >= 10
