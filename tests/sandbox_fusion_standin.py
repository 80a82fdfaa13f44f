"""A STAND-IN for a SandboxFusion server (the real one is a container image that cannot
run here), written from its documented API (bytedance/SandboxFusion,
sandbox/server/sandbox_api.py): ``POST /run_code`` takes ``RunCodeRequest`` (code,
language, stdin, compile_timeout, run_timeout, memory_limit_MB, files, fetch_files) and
answers ``RunCodeResponse`` (status Success | Failed | SandboxError, message,
compile_result, run_result: {status Finished | TimeLimitExceeded | Error, execution_time,
return_code, stdout, stderr}, executor_pod_name, files).

It runs python and cpp programs with subprocess and a timeout, WITHOUT isolation: only
the tests' own trusted programs go to it. ``fail_next`` answers that many requests 503
first; ``sandbox_error`` makes every answer a SandboxError; ``requests`` keeps what came.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tests.e2e.server import free_port

__all__ = ["StandIn", "running_standin"]


class RunCodeRequest(BaseModel):
    compile_timeout: float = 10
    run_timeout: float = 10
    memory_limit_MB: int = -1
    code: str
    stdin: str | None = None
    language: str
    files: dict[str, str | None] = Field(default_factory=dict)
    fetch_files: list[str] = Field(default_factory=list)


class StandIn:
    def __init__(self) -> None:
        self.fail_next = 0
        self.sandbox_error = False
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/run_code")(self.run_code)

    def run_code(self, request: RunCodeRequest) -> JSONResponse:
        self.requests.append(request.model_dump())
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse({"detail": "busy"}, status_code=503)
        if self.sandbox_error:
            return JSONResponse(_response("SandboxError", message="executor pod lost"))
        with tempfile.TemporaryDirectory() as work:
            compiled = None
            if request.language == "cpp":
                Path(work, "main.cpp").write_text(request.code)
                compiled = _command(["g++", "-O1", "-o", "main", "main.cpp"], work, "",
                                    request.compile_timeout)  # fmt: skip
                if compiled["status"] != "Finished" or compiled["return_code"] != 0:
                    return JSONResponse(_response("Failed", compile_result=compiled))
                argv = ["./main"]
            elif request.language == "python":
                Path(work, "main.py").write_text(request.code)
                argv = [sys.executable, "main.py"]
            else:
                return JSONResponse({"detail": f"unknown language {request.language}"}, 422)
            ran = _command(argv, work, request.stdin or "", request.run_timeout)
        ok = ran["status"] == "Finished" and ran["return_code"] == 0
        return JSONResponse(_response("Success" if ok else "Failed", compile_result=compiled,
                                      run_result=ran))  # fmt: skip


def _command(argv: list[str], cwd: str, stdin: str, timeout: float) -> dict[str, Any]:
    start = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        return {"status": "TimeLimitExceeded", "execution_time": time.monotonic() - start,
                "return_code": None, "stdout": str(exc.stdout or ""), "stderr": ""}  # fmt: skip
    return {"status": "Finished", "execution_time": time.monotonic() - start,
            "return_code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}  # fmt: skip


def _response(status: str, message: str = "", **results: Any) -> dict[str, Any]:
    return {"status": status, "message": message, "compile_result": results.get("compile_result"),
            "run_result": results.get("run_result"), "executor_pod_name": None, "files": {}}  # fmt: skip


@contextmanager
def running_standin() -> Iterator[tuple[str, StandIn]]:
    """The stand-in on a free port in a thread: (base URL, its state)."""
    standin = StandIn()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(standin.app, host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the SandboxFusion stand-in did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", standin
    finally:
        server.should_exit = True
        thread.join(10)
