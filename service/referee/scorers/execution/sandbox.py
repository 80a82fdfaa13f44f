"""Run one untrusted command in a bubblewrap sandbox, with limits, and say how it ended.

Isolation (``isolation: bwrap``): new user, PID, network (no interface but a loopback of
its own), IPC, UTS and cgroup namespaces; no further user namespaces inside; a read-only
``/usr`` (interpreters, compilers and their libraries) and nothing else of the host's
files (no ``/etc``, ``/home``, ``/root``, ``/proc`` of the host, no server files); a fresh
size-limited tmpfs as ``/work`` (the current directory) and ``/tmp``; a cleared
environment; a new session (no terminal to inject into); a seccomp filter on x86_64
(:mod:`referee.scorers.execution._seccomp` says what it refuses). When the server runs as root,
bwrap runs as an unprivileged uid (``run_as_uid``, through ``setpriv``), so the process
limit holds (the kernel exempts root from it).

Limits, set by ``prlimit`` inside the namespace (so the process count is this run's own):
CPU seconds (``RLIMIT_CPU``: SIGXCPU, then SIGKILL a second later), address space, number
of processes, file size, open files; output bytes (the run is killed and truncated past
the cap); wall-clock time: the whole process tree is killed (its PID namespace goes
with its init). A background process dies with the run's PID namespace when the
program's main process exits.

A wall-clock kill is a verdict (``time_limit``) only when the program itself spent the
time (sleeping, blocked, or using its whole CPU budget across processes); when it had used
less than its CPU budget and spent over a quarter of the wall limit waiting for a CPU (the
host is overloaded), the run is ``overloaded``: no verdict, retry later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from referee.scorers.execution._processes import kill_tree, tree_usage
from referee.scorers.execution._seccomp import FILTER

__all__ = [
    "RUN_ENV",
    "Limits",
    "RunOutcome",
    "Sandbox",
    "SandboxUnavailableError",
]

RUN_ENV: dict[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
_STDERR_CAP = 64 * 1024
_CHUNK = 64 * 1024

Status = Literal[
    "finished", "signalled", "time_limit", "output_limit", "overloaded", "error", "deadline"
]


class SandboxUnavailableError(RuntimeError):
    """The sandbox cannot be created on this host; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_s: float = 2.0
    wall_s: float = 5.0
    memory_mb: int = 512
    max_processes: int = 32
    file_size_mb: int = 16
    open_files: int = 64
    output_bytes: int = 1 << 20
    tmpfs_mb: int = 64


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How one run ended. ``status``: finished (``exit_code`` is the program's), signalled
        (``signal``), time_limit (CPU or its own wall time), output_limit (``stdout`` holds the
        first ``output_bytes``), overloaded (killed at the wall limit while starved of CPU: no
        verdict), error (the sandbox itself failed: ``detail`` says how), deadline (not run: the
    request's deadline passed while it waited for a slot)."""

    status: Status
    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    wall_s: float = 0.0
    detail: str = ""


class Sandbox:
    """Builds and runs sandboxed commands. ``isolation='none'`` runs with the limits but
    no namespaces (an explicit, logged choice for hosts without user namespaces)."""

    def __init__(
        self,
        *,
        isolation: Literal["bwrap", "none"] = "bwrap",
        run_as_uid: int = 65534,
        bwrap: str = "bwrap",
        ro_paths: Sequence[str] = ("/usr",),
        seccomp: bool = True,
    ) -> None:
        self.isolation = isolation
        self.seccomp = seccomp
        self.run_as_uid = run_as_uid
        self.bwrap = bwrap
        self.ro_paths = tuple(ro_paths)
        self._drop_to: int | None = run_as_uid if os.geteuid() == 0 else None

    # -- start-up check ----------------------------------------------------------------
    async def check(self) -> None:
        """Raise :class:`SandboxUnavailableError` when a sandbox cannot be made here."""
        needed = ["prlimit"] + (["setpriv"] if self._drop_to is not None else [])
        missing = [tool for tool in needed if shutil.which(tool, path=RUN_ENV["PATH"]) is None]
        if missing:
            raise SandboxUnavailableError(
                f"{' and '.join(missing)} not found in {RUN_ENV['PATH']}: install the "
                "Debian/Ubuntu package util-linux"
            )
        if self.isolation == "none":
            return
        if shutil.which(self.bwrap) is None:
            raise SandboxUnavailableError(
                f"bubblewrap ({self.bwrap!r}) is not installed: install the Debian/Ubuntu "
                "package `bubblewrap` (apt-get install bubblewrap), or set `isolation: none` "
                "to run code WITHOUT isolation (not for untrusted code)"
            )
        with _WorkDir(self._drop_to) as work:
            outcome = await self.run(["/bin/true"], work=work, limits=Limits())
        if outcome.status != "finished" or outcome.exit_code != 0:
            raise SandboxUnavailableError(
                "bubblewrap cannot create a sandbox on this host "
                f"({outcome.detail or outcome.stderr.decode(errors='replace').strip()}): "
                "unprivileged user namespaces must be allowed (sysctl "
                "kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; on "
                "Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0; in a "
                "container, a seccomp/AppArmor profile that allows unshare and mount), or "
                "set `isolation: none` to run code WITHOUT isolation"
            )

    def work_dir(self) -> _WorkDir:
        """A private host directory for one item's files (sources, a compiled binary)."""
        return _WorkDir(self._drop_to)

    # -- one run -----------------------------------------------------------------------
    def command(
        self, argv: Sequence[str], *, work: Path, writable_work: bool, limits: Limits,
        binds: Mapping[str, str] = {}, status_fd: int | None = None,
        seccomp_fd: int | None = None,
    ) -> list[str]:  # fmt: skip
        """The full command line: bwrap (unless isolation is none), prlimit, ``argv``."""
        prlimit = [
            "prlimit",
            f"--cpu={max(1, round(limits.cpu_s))}:{max(1, round(limits.cpu_s)) + 1}",
            f"--as={limits.memory_mb << 20}",
            f"--nproc={limits.max_processes}",
            f"--fsize={limits.file_size_mb << 20}",
            f"--nofile={limits.open_files}",
            "--core=0",
            "--",
            *argv,
        ]
        # A root server drops to the run uid first (setpriv, not Popen's user=: uvloop,
        # the server's event loop, has no such argument).
        drop = (
            ["setpriv", f"--reuid={self._drop_to}", f"--regid={self._drop_to}",
             "--clear-groups", "--"]
            if self._drop_to is not None else []
        )  # fmt: skip
        if self.isolation == "none":
            return [*drop, *prlimit]
        cmd = [
            *drop,
            self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
        ]  # fmt: skip
        for key, value in RUN_ENV.items():
            cmd += ["--setenv", key, value]
        for path in self.ro_paths:
            cmd += ["--ro-bind", path, path]
        for name in ("bin", "lib", "lib64", "sbin"):
            if Path(f"/usr/{name}").exists():
                cmd += ["--symlink", f"usr/{name}", f"/{name}"]
        cmd += ["--proc", "/proc", "--dev", "/dev"]
        cmd += ["--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/tmp"]
        if writable_work:
            cmd += ["--bind", str(work), "/work"]
        else:
            cmd += ["--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/work"]
            for name, inside in binds.items():
                cmd += ["--ro-bind", str(work / name), inside]
        cmd += ["--chdir", "/work"]
        if status_fd is not None:
            cmd += ["--json-status-fd", str(status_fd)]
        if seccomp_fd is not None:
            cmd += ["--seccomp", str(seccomp_fd)]
        return [*cmd, *prlimit]

    def _seccomp_fd(self) -> int | None:
        """A pipe holding the seccomp filter for bwrap to read (None: no filter)."""
        if self.isolation == "none" or not self.seccomp or FILTER is None:
            return None
        read, write = os.pipe()
        os.write(write, FILTER)  # a few hundred bytes: within the pipe's buffer
        os.close(write)
        return read

    async def run(
        self, argv: Sequence[str], *, work: Path, limits: Limits, stdin: bytes = b"",
        writable_work: bool = False, binds: Mapping[str, str] = {},
    ) -> RunOutcome:  # fmt: skip
        """Run ``argv`` in ``/work``. ``writable_work``: ``work`` itself is ``/work``
        (a compile step); otherwise ``/work`` is a fresh tmpfs with ``binds`` (names in
        ``work`` -> paths inside) mounted read-only."""
        status_r, status_w = os.pipe()
        seccomp_r = self._seccomp_fd()
        cmd = self.command(argv, work=work, writable_work=writable_work, limits=limits,
                           binds=binds, status_fd=status_w, seccomp_fd=seccomp_r)  # fmt: skip
        passed = (status_w,) if seccomp_r is None else (status_w, seccomp_r)
        start = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=passed,
                env=RUN_ENV if self.isolation == "none" else {},
                cwd=work, start_new_session=True,
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            os.close(status_r)
            for fd in passed:
                os.close(fd)
            return RunOutcome("error", detail=f"cannot start the sandbox: {exc}")
        for fd in passed:
            os.close(fd)
        try:
            return await self._supervise(proc, stdin, limits, start, status_r)
        finally:
            if proc.returncode is None:
                kill_tree(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            os.close(status_r)

    async def _supervise(
        self, proc: asyncio.subprocess.Process, stdin: bytes, limits: Limits, start: float,
        status_r: int,
    ) -> RunOutcome:  # fmt: skip
        stdin_pipe, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
        assert stdin_pipe is not None and stdout is not None and stderr is not None
        out = bytearray()
        err = bytearray()
        over = asyncio.Event()

        async def feed() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin_pipe.write(stdin)
                await stdin_pipe.drain()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin_pipe.close()

        # Readers drain their pipe to the end (keeping only up to the caps): a paused
        # pipe never sees its end, and the process would never count as finished.
        async def read_out() -> None:
            while chunk := await stdout.read(_CHUNK):
                if len(out) <= limits.output_bytes:
                    out.extend(chunk)
                    if len(out) > limits.output_bytes:
                        over.set()

        async def read_err() -> None:
            while chunk := await stderr.read(_CHUNK):
                if len(err) < _STDERR_CAP:
                    err.extend(chunk[: _STDERR_CAP - len(err)])

        tasks = [asyncio.ensure_future(t()) for t in (feed, read_out, read_err)]
        waiter = asyncio.ensure_future(proc.wait())
        over_task = asyncio.ensure_future(over.wait())
        killed: RunOutcome | None = None
        try:
            await asyncio.wait(
                {waiter, over_task}, timeout=limits.wall_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not waiter.done():
                killed = self._why_killed(proc.pid, over.is_set(), limits)
                kill_tree(proc.pid)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), 5.0)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.gather(tasks[1], tasks[2]), 1.0)
        finally:
            for task in (*tasks, over_task, waiter):
                task.cancel()
        wall = time.monotonic() - start
        if killed is not None:
            stdout_kept = bytes(out[: limits.output_bytes])
            return RunOutcome(killed.status, stdout=stdout_kept, stderr=bytes(err),
                              wall_s=wall, detail=killed.detail)  # fmt: skip
        return self._finished(proc.returncode, bytes(out), bytes(err), wall, status_r)

    @staticmethod
    def _why_killed(pid: int, output_over: bool, limits: Limits) -> RunOutcome:
        if output_over:
            return RunOutcome("output_limit", detail=f"more than {limits.output_bytes} "
                              "bytes of output (truncated)")  # fmt: skip
        cpu, waited = tree_usage(pid)
        # Short of its CPU budget and kept waiting for a CPU a good part of the time: the
        # host, not the program, ran out of time. (A tree that used its budget, even
        # spread over many processes, or that slept, gets its verdict.)
        if cpu < limits.cpu_s and waited > 0.25 * limits.wall_s:
            return RunOutcome(
                "overloaded",
                detail=f"wall limit {limits.wall_s:g}s reached after {cpu:.2f}s of CPU and "
                f"{waited:.2f}s waiting for a CPU: the host is overloaded",
            )
        return RunOutcome("time_limit", detail=f"wall-clock limit {limits.wall_s:g}s "
                          f"({cpu:.2f}s of CPU)")  # fmt: skip

    def _finished(self, code: int | None, out: bytes, err: bytes, wall: float,
                  status_r: int) -> RunOutcome:  # fmt: skip
        if self.isolation == "bwrap":
            status = _read_status(status_r)
            if "child-pid" not in status:  # bwrap failed before the program started
                detail = err.decode(errors="replace").strip()[-500:]
                return RunOutcome("error", exit_code=code, stderr=err, wall_s=wall,
                                  detail=f"the sandbox failed to start: {detail}")  # fmt: skip
            if "exit-code" in status:
                code = int(status["exit-code"])
        if code is None:
            return RunOutcome("error", detail="no exit status")
        # bwrap reports a signal as 128 + N; a direct child reports -N.
        sig = -code if code < 0 else (code - 128 if code > 128 else None)
        if sig is not None:
            if sig in (signal.SIGXCPU, signal.SIGKILL):
                return RunOutcome("time_limit", signal=sig, stdout=out, stderr=err,
                                  wall_s=wall, detail="CPU time limit")  # fmt: skip
            return RunOutcome("signalled", signal=sig, stdout=out, stderr=err, wall_s=wall)
        return RunOutcome("finished", exit_code=code, stdout=out, stderr=err, wall_s=wall)


def _read_status(fd: int) -> dict[str, int]:
    """bwrap's --json-status-fd documents (one per line), merged."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 65536):
            data += chunk
    status: dict[str, int] = {}
    for line in data.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                status.update({k: v for k, v in doc.items() if isinstance(v, int)})
    return status


class _WorkDir:
    """A private temporary directory, owned by the run uid when the server is root."""

    def __init__(self, owner: int | None) -> None:
        self.owner = owner
        self.path: Path | None = None

    def __enter__(self) -> Path:
        import tempfile

        self.path = Path(tempfile.mkdtemp(prefix="referee-run-"))
        if self.owner is not None:
            os.chown(self.path, self.owner, self.owner)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
