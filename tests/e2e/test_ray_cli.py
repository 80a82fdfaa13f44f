"""`referee serve --ray`: the CLI starts a local Ray cluster, deploys the app from the
same YAML config, and serves the HTTP API until interrupted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.test_ray_serve import free_port

pytest.importorskip("ray", reason="distributed mode needs the ray extra")

pytestmark = pytest.mark.slow


def test_serve_ray_starts_the_app_from_a_config_file(
    minilm_classifier: Path, tmp_path: Path
) -> None:
    path = tmp_path / "referee.yaml"
    config = {
        "scorers": {
            "rm": {"kind": "classifier", "options": {"model": str(minilm_classifier), "input": "pair"}},
            "fmt": {"kind": "format", "options": {"mode": "think_answer"}},
        },
        "pipelines": {"both": {"reward": {"type": "weighted_sum", "weights": [1.0, 0.5],
                                          "inputs": ["rm", "fmt"]}}},
        "cache": {"backend": "none"},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    referee = str(Path(sys.executable).with_name("referee"))
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([referee, "serve", "--ray", "--config", str(path), "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1"})  # fmt: skip
        signals = ""
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, log.seek(0) or log.read().decode(errors="replace")
                try:
                    if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "not ready in 180 s"
                time.sleep(1)
            body = {
                "pipeline": "both",
                "items": [{"id": "a", "prompt": "q", "response": "an answer"}],
            }
            result = httpx.post(f"{url}/v1/rewards", json=body, timeout=60).json()["results"][0]
            assert result["error"] is None and isinstance(result["reward"], float)
            assert httpx.get(f"{url}/readyz").json()["scorers"]["rm"]["deployment"] == "scorer-rm"
        finally:
            with contextlib.suppress(OSError):  # what the process ignores and blocks, if stuck
                status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                signals = " ".join(line for line in status if line.startswith(("SigIgn", "SigBlk")))
            proc.send_signal(signal.SIGINT)
            stopping = time.monotonic()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stopped_s = time.monotonic() - stopping
        log.seek(0)
        output = log.read().decode(errors="replace")
        assert stopped_s < 30, (
            f"SIGINT to exit took {stopped_s:.0f}s ({signals}):\n{output[-6000:]}"
        )
        assert "referee: SIGINT: shutting down" in output, output[-3000:]
