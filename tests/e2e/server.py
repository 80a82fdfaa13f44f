"""`referee serve` as a subprocess for the end-to-end tests: the console script a user
types, on free ports, ready-checked, and asserted to exit cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

# The console script a user types (installed next to this interpreter), not `python -m`.
REFEREE = [str(Path(sys.executable).with_name("referee"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REFEREE, *args], capture_output=True, text=True, timeout=180,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@contextlib.contextmanager
def running_server(
    *args: str, env: dict[str, str] | None = None, ready_path: str = "/readyz",
    log_path: Path | None = None, referee: list[str] | None = None, ready_s: float = 120,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:  # fmt: skip
    """`referee serve` on a free port until `ready_path` answers 200 (/healthz: as soon as
    it listens); on exit, SIGINT and a clean exit asserted. Its output goes to
    ``log_path`` when given (for tests that read the server's log). ``referee``: the
    console script of another environment (the vLLM one)."""
    port = free_port()
    with log_path.open("w+b") if log_path else tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([*(referee or REFEREE), "serve", "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})  # fmt: skip

        def output() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + ready_s
        try:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited early:\n{output()}")
                try:
                    if httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"server not ready within {ready_s} s:\n{output()}")
                time.sleep(0.2)
            yield url, proc
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            # uvicorn re-raises the signal after a clean shutdown: 128 + SIGINT
            assert proc.wait(timeout=30) in (0, 130), output()
            assert "Application shutdown complete" in output(), output()
            assert "Traceback" not in output(), output()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
