"""Run one untrusted command in a bubblewrap sandbox, with limits, and say how it ended.

Isolation (``isolation: bwrap``): new user, PID, network (no interface but a loopback of
its own), IPC, UTS and cgroup namespaces; no further user namespaces inside; a read-only
``/usr`` (interpreters, compilers and their libraries) and nothing else of the host's
files (no ``/etc``, ``/home``, ``/root``, ``/proc`` of the host, no server files); a fresh
size-limited tmpfs as ``/work`` (the current directory), ``/tmp`` and ``/dev/shm``, and
nothing else writable (bwrap's root and ``/dev`` are remounted read-only); a cleared
environment; a new session (no terminal to inject into); a seccomp filter on x86_64
(:mod:`referee.scorers.execution._seccomp` says what it refuses). When the server runs as root,
bwrap runs as an unprivileged uid (``run_as_uid``), so the process limit holds (the
kernel exempts root from it).

The uid drop and the limits are the job of a small launcher compiled at start-up
(:mod:`referee.scorers.execution._launcher`; ``setpriv`` and ``prlimit`` where there is no
C compiler), which is also the sandbox's pid 1 (``--as-pid-1``): not dumpable, unlike
bwrap's own init, so the program cannot write into it through ``/proc/1/mem``. Runs
that only read their files take a sandbox made ahead (:mod:`referee.scorers.execution._pool`,
``prestart`` per kind of run): set up, waiting just before its program, and used for that
one run only.

Limits, set inside the namespace just before the program (so the process count is this
run's own):
CPU seconds (``RLIMIT_CPU``: SIGXCPU, then SIGKILL a second later), address space, number
of processes, file size, open files; output bytes (the run is killed and truncated past
the cap); wall-clock time: the whole process tree is killed (its PID namespace goes
with its init). A background process dies with the run's PID namespace when the
program's main process exits.

A wall-clock kill is a verdict (``time_limit``) only when the program itself spent the
time (sleeping, blocked, or using its whole CPU budget across processes); when it had used
less than its CPU budget and spent over a quarter of the wall limit waiting for a CPU (the
host is overloaded), the run is ``overloaded``: no verdict, retry later; unless it had
more processes alive than CPUs to run them on, and so may have kept itself waiting.

:meth:`Sandbox.run_cases` runs several stdin cases of one item one after another in one
sandbox (the launcher's ``cases`` mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from referee.scorers.execution._launcher import INSIDE, launcher
from referee.scorers.execution._pool import Pool, Prepared, WorkDir
from referee.scorers.execution._processes import kill_tree, tree_usage
from referee.scorers.execution._seccomp import FILTER
from referee.scorers.execution._spawn import Child

__all__ = [
    "RUN_ENV",
    "Limits",
    "RunOutcome",
    "Sandbox",
    "SandboxUnavailableError",
]

log = logging.getLogger(__name__)

RUN_ENV: dict[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
_STDERR_CAP = 64 * 1024

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
        prestart: int = 0,
        max_cases: int = 1,
    ) -> None:
        self.isolation = isolation
        self.seccomp = seccomp
        self.run_as_uid = run_as_uid
        self.bwrap = bwrap
        self.ro_paths = tuple(ro_paths)
        self._drop_to: int | None = run_as_uid if os.geteuid() == 0 else None
        self._root: tuple[str, ...] | None = None
        self.prestart = prestart
        self.max_cases = max_cases
        self._pool = Pool(self._prepare_kind, prestart)

    # -- start-up check ----------------------------------------------------------------
    async def check(self) -> None:
        """Raise :class:`SandboxUnavailableError` when a sandbox cannot be made here."""
        helper = await asyncio.to_thread(launcher)
        needed = []  # without a C compiler for the launcher: the slower tools
        if helper is None:
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
        with WorkDir(self._drop_to) as work:  # made on the spot, not ahead
            try:
                box = self._prepare(["/bin/true"], work=work, limits=Limits())
                outcome = await self._go(box, Limits(), b"")
            except OSError as exc:
                outcome = RunOutcome("error", detail=str(exc))
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
        if self.runs_cases:
            await self._check_cases()

    async def _check_cases(self) -> None:
        """Several cases in one sandbox rely on the launcher being the first process of its
        PID namespace. Where that does not hold, every case would still get its verdict
        (from a sandbox of its own), only more slowly: say so once, and don't try."""
        with WorkDir(self._drop_to) as work:
            outcomes = await self.run_cases(["/bin/true"], work=work, limits=Limits(),
                                            stdins=[b"", b""], ahead=False)  # fmt: skip
        if [o.status for o in outcomes] != ["finished", "finished"]:
            log.warning(
                "several test cases cannot share a sandbox on this host (the launcher did not "
                "report them: %s); each case gets a sandbox of its own, more slowly",
                "; ".join(o.detail or o.status for o in outcomes) or "no report",
            )
            self.max_cases = 1

    def work_dir(self) -> WorkDir:
        """A private host directory for one item's files (sources, a compiled binary)."""
        return WorkDir(self._drop_to)

    # -- one run -----------------------------------------------------------------------
    def _drop(self, target: str) -> list[str]:
        """What starts ``target`` (an absolute path) as the run uid when the server is
        root: the launcher, else ``setpriv`` (not Popen's ``user=``: that forks the whole
        server instead of a vfork)."""
        if self._drop_to is None:
            return [target]
        helper = launcher()
        if helper is not None:
            return [helper, "drop", str(self._drop_to), target, target]
        return ["setpriv", f"--reuid={self._drop_to}", f"--regid={self._drop_to}",
                "--clear-groups", "--", target]  # fmt: skip

    def command(
        self, argv: Sequence[str], *, work: Path, writable_work: bool, limits: Limits,
        binds: Mapping[str, str] = {}, status_fd: int | None = None,
        seccomp_fd: int | None = None, block_fd: int | None = None, cases: bool = False,
    ) -> list[str]:  # fmt: skip
        """The full command line: bwrap (unless isolation is none), the limits (the
        launcher, or prlimit), ``argv``. ``cases``: the launcher runs ``argv`` once per
        case read from its stdin (:meth:`run_cases`; bwrap and the launcher only)."""
        helper = launcher()
        if cases:
            if helper is None or self.isolation != "bwrap":
                raise ValueError("several cases in one sandbox need bwrap and the launcher")
            limited = [
                INSIDE, "cases", str(max(1, round(limits.cpu_s))), str(limits.memory_mb << 20),
                str(limits.max_processes), str(limits.file_size_mb << 20),
                str(limits.open_files), str(max(1, round(limits.wall_s * 1000))),
                str(limits.output_bytes), str(_STDERR_CAP), *argv,
            ]  # fmt: skip
        elif helper is not None:
            cpu = max(1, round(limits.cpu_s))
            limited = [
                helper if self.isolation == "none" else INSIDE, "limits", str(cpu),
                str(limits.memory_mb << 20), str(limits.max_processes),
                str(limits.file_size_mb << 20), str(limits.open_files), *argv,
            ]  # fmt: skip
        else:
            cpu = max(1, round(limits.cpu_s))
            limited = [
                "prlimit", f"--cpu={cpu}:{cpu + 1}", f"--as={limits.memory_mb << 20}",
                f"--nproc={limits.max_processes}", f"--fsize={limits.file_size_mb << 20}",
                f"--nofile={limits.open_files}", "--core=0", "--", *argv,
            ]  # fmt: skip
        if self.isolation == "none":
            first = limited[0] if helper else shutil.which("prlimit", path=RUN_ENV["PATH"])
            return [*self._drop(first or "/usr/bin/prlimit"), *limited[1:]]
        cmd = list(self._root_options())
        for path in ("/dev/shm", "/tmp"):
            cmd += ["--size", str(limits.tmpfs_mb << 20), "--tmpfs", path]
        if writable_work:
            cmd += ["--bind", str(work), "/work"]
        else:
            cmd += ["--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/work"]
            for name, inside in binds.items():
                cmd += ["--ro-bind", str(work / name), inside]
        # Only the size-limited tmpfs mounts stay writable: bwrap's own root and /dev are
        # tmpfs without a size limit, which a program could fill with the host's memory.
        cmd += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/work"]
        for option, fd in (("--json-status-fd", status_fd), ("--seccomp", seccomp_fd),
                           ("--block-fd", block_fd)):  # fmt: skip
            if fd is not None:
                cmd += [option, str(fd)]
        return [*cmd, "--", *limited]

    def _root_options(self) -> tuple[str, ...]:
        """bwrap and the options every run shares (namespaces, environment, the read-only
        root, the launcher, /proc, /dev): worked out once, not on every run."""
        if self._root is None:
            helper = launcher()
            cmd = [
                *self._drop(shutil.which(self.bwrap) or self.bwrap),
                "--unshare-all", "--unshare-user", "--disable-userns",
                "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
            ]  # fmt: skip
            if helper is not None:  # the launcher is the sandbox's pid 1 (_launcher.py)
                cmd.append("--as-pid-1")
            for key, value in RUN_ENV.items():
                cmd += ["--setenv", key, value]
            for path in self.ro_paths:
                cmd += ["--ro-bind", path, path]
            for name in ("bin", "lib", "lib64", "sbin"):
                if Path(f"/usr/{name}").exists():
                    cmd += ["--symlink", f"usr/{name}", f"/{name}"]
            if helper is not None:
                cmd += ["--ro-bind", helper, INSIDE]
            cmd += ["--proc", "/proc", "--dev", "/dev", "--mqueue", "/dev/mqueue"]
            self._root = tuple(cmd)
        return self._root

    def _seccomp_fd(self) -> int | None:
        """A pipe holding the seccomp filter for bwrap to read (None: no filter)."""
        if self.isolation == "none" or not self.seccomp or FILTER is None:
            return None
        read, write = os.pipe()
        os.write(write, FILTER)  # a few hundred bytes: within the pipe's buffer
        os.close(write)
        return read

    def _prepare(
        self, argv: Sequence[str], *, work: Path | None, limits: Limits,
        writable_work: bool = False, binds: Mapping[str, str] = {}, cases: bool = False,
    ) -> Prepared:  # fmt: skip
        """Start a sandbox for one run; bwrap waits on its block fd before the program.
        ``work`` None: the binds come from a staging directory of its own (empty files,
        filled when it is taken)."""
        staging = None
        if work is None:
            staging = work = Path(tempfile.mkdtemp(prefix="referee-stage-"))
            os.chmod(staging, 0o755)  # bwrap runs as the run uid; the files stay root's
            for name in binds:
                (staging / name).touch(0o644)
        bwrap = self.isolation == "bwrap"
        status_r, status_w = os.pipe() if bwrap else (None, None)
        block_r, block_w = os.pipe() if bwrap else (None, None)
        seccomp_r = self._seccomp_fd()
        passed = tuple(fd for fd in (status_w, block_r, seccomp_r) if fd is not None)
        cmd = self.command(argv, work=work, writable_work=writable_work, limits=limits,
                           binds=binds, status_fd=status_w, seccomp_fd=seccomp_r,
                           block_fd=block_r, cases=cases)  # fmt: skip
        try:
            child = Child(cmd, cwd=work, env={} if bwrap else RUN_ENV, pass_fds=passed)
        except (OSError, ValueError) as exc:
            for fd in (status_r, block_w):  # the passed ones: below
                if fd is not None:
                    os.close(fd)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise OSError(f"cannot start the sandbox: {exc}") from exc
        finally:
            for fd in passed:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if cases:  # the launcher's report: each case's output within its own caps
            child.start_reading(self.max_cases * (limits.output_bytes + _STDERR_CAP + 256),
                                _STDERR_CAP)  # fmt: skip
        else:
            child.start_reading(limits.output_bytes, _STDERR_CAP)
        return Prepared(child, status_r, block_w, staging)

    def _prepare_kind(self, kind: Hashable) -> Prepared:
        argv, binds, limits, cases = cast(
            tuple[tuple[str, ...], tuple[tuple[str, str], ...], Limits, bool], kind
        )
        return self._prepare(argv, work=None, limits=limits, binds=dict(binds), cases=cases)

    @property
    def runs_cases(self) -> bool:
        """Whether several cases can share a sandbox (:meth:`run_cases`)."""
        return self.isolation == "bwrap" and self.max_cases > 1 and launcher() is not None

    async def run_cases(
        self, argv: Sequence[str], *, work: Path, limits: Limits, stdins: Sequence[bytes],
        binds: Mapping[str, str] = {}, ahead: bool = True,
    ) -> list[RunOutcome]:  # fmt: skip
        """Run ``argv`` once per stdin, one after another, in one sandbox (at most
        ``max_cases``; one made ahead unless ``ahead`` is false): the launcher, the
        sandbox's pid 1, starts each case as a fresh process with the limits, feeds its
        stdin, enforces its wall limit and output cap, then kills whatever it left running
        and restores ``/work``, ``/tmp``, ``/dev/shm``, ``/dev/mqueue`` and System V IPC
        before the next. The sandbox is set up once instead of once per case.

        Returns the outcomes of the cases reported, in order: possibly fewer than
        ``stdins``. The launcher stops after a case killed at its wall limit or one that
        changed what the next would inherit from it, or when a directory cannot be
        restored; the sandbox may fail. The caller runs the rest each in a sandbox of its
        own (:meth:`run`)."""
        if not stdins:
            return []
        if len(stdins) > self.max_cases or not self.runs_cases:
            raise ValueError(f"run_cases takes 1 to {self.max_cases} cases with bwrap")
        kind = (tuple(argv), tuple(binds.items()), limits, True)
        try:
            box = await self._staged(kind, work, binds, ahead=ahead)
        except OSError:
            return []  # nothing reported: all run on their own
        return await self._go_cases(box, limits, stdins)

    async def _staged(
        self, kind: Hashable, work: Path, binds: Mapping[str, str], *, ahead: bool = True
    ) -> Prepared:
        """A sandbox of ``kind`` (one made ahead when there is one) holding the run's files
        from ``work``; OSError when it cannot be made or filled."""
        pooled = self._pool.take(kind) if ahead and self.prestart > 0 else None
        box = pooled or self._prepare_kind(kind)
        try:
            box.stage(work, binds)
        except OSError as exc:
            await box.discard()
            raise OSError(f"cannot stage the program: {exc}") from exc
        return box

    async def _go_cases(
        self, box: Prepared, limits: Limits, stdins: Sequence[bytes]
    ) -> list[RunOutcome]:
        framed = [f"{len(stdins)}\n".encode()]
        for stdin in stdins:
            framed += [f"{len(stdin)}\n".encode(), stdin]
        try:
            box.release()
            box.child.feed(b"".join(framed))
            # each case is held to its own wall limit by the launcher (which a program
            # cannot signal); this only catches a launcher that hung
            bound = len(stdins) * (limits.wall_s + 1.0) + 5.0
            await asyncio.wait({box.child.exited}, timeout=bound)
            if not box.child.exited.done():
                kill_tree(box.child.pid)
                await asyncio.wait({box.child.exited}, timeout=5.0)
            else:
                await box.child.output_closed(1.0)
            return _parse_cases(bytes(box.child.out), len(stdins), limits)
        finally:
            await box.discard()

    async def run(
        self, argv: Sequence[str], *, work: Path, limits: Limits, stdin: bytes = b"",
        writable_work: bool = False, binds: Mapping[str, str] = {},
    ) -> RunOutcome:  # fmt: skip
        """Run ``argv`` in ``/work``. ``writable_work``: ``work`` itself is ``/work``
        (a compile step); otherwise ``/work`` is a fresh tmpfs with ``binds`` (names in
        ``work`` -> paths inside) mounted read-only: such runs take a sandbox made ahead
        when ``prestart`` > 0. ``wall_s`` counts from the moment the program is let go."""
        try:
            if self.isolation == "bwrap" and not writable_work and self.prestart > 0:
                kind = (tuple(argv), tuple(binds.items()), limits, False)
                box = await self._staged(kind, work, binds)
            else:
                box = self._prepare(argv, work=work, limits=limits,
                                    writable_work=writable_work, binds=binds)  # fmt: skip
        except OSError as exc:
            return RunOutcome("error", detail=str(exc))
        return await self._go(box, limits, stdin)

    async def _go(self, box: Prepared, limits: Limits, stdin: bytes) -> RunOutcome:
        try:
            box.release()
            start = time.monotonic()
            box.child.feed(stdin)
            return await self._supervise(box, limits, start)
        finally:
            await box.discard()

    async def close(self) -> None:
        """Kill the sandboxes made ahead."""
        await self._pool.close()

    async def _supervise(self, box: Prepared, limits: Limits, start: float) -> RunOutcome:
        child = box.child
        waiter, over = child.exited, child.output_over
        either: set[asyncio.Future[Any]] = {waiter, over}
        await asyncio.wait(either, timeout=limits.wall_s, return_when=asyncio.FIRST_COMPLETED)
        killed: RunOutcome | None = None
        if over.done():
            killed = self._why_killed(child.pid, True, limits)
        elif not waiter.done():
            killed = self._why_killed(child.pid, False, limits)
        if killed is not None:
            kill_tree(child.pid)
            await asyncio.wait({waiter}, timeout=5.0)
        else:
            await child.output_closed(1.0)
        wall = time.monotonic() - start
        out, err = bytes(child.out), bytes(child.err)
        if killed is not None:
            return RunOutcome(killed.status, stdout=out[: limits.output_bytes], stderr=err,
                              wall_s=wall, detail=killed.detail)  # fmt: skip
        return self._finished(waiter.result(), out, err, wall, box)

    def _why_killed(self, pid: int, output_over: bool, limits: Limits) -> RunOutcome:
        if output_over:
            return _output_over(limits)
        skip = 2 if self.isolation == "bwrap" else 0  # bwrap, the sandbox's pid 1
        return _wall_verdict(*tree_usage(pid, skip), limits)

    def _finished(self, code: int | None, out: bytes, err: bytes, wall: float,
                  box: Prepared) -> RunOutcome:  # fmt: skip
        if box.status_r is not None:
            status = box.status()
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
            return _signalled(sig, out, err, wall)
        return RunOutcome("finished", exit_code=code, stdout=out, stderr=err, wall_s=wall)


def _output_over(limits: Limits) -> RunOutcome:
    return RunOutcome("output_limit", detail=f"more than {limits.output_bytes} "
                      "bytes of output (truncated)")  # fmt: skip


def _wall_verdict(cpu: float, waited: float, procs: int, cpus: int, limits: Limits) -> RunOutcome:
    """A run killed at its wall limit after ``cpu`` seconds of CPU and ``waited`` seconds
    waiting for one, with ``procs`` processes alive that could use ``cpus`` CPUs. Short of
    its CPU budget and kept waiting a good part of the time: the host, not the program, ran
    out of time (no verdict). A tree that used its budget, even spread over many processes,
    or that slept, gets its verdict; so does one with more processes than CPUs to run them
    on, which may have kept itself waiting (a program must not be able to dodge a verdict
    by crowding its own CPUs)."""
    if cpu < limits.cpu_s and waited > 0.25 * limits.wall_s and procs <= max(cpus, 1):
        return RunOutcome(
            "overloaded",
            detail=f"wall limit {limits.wall_s:g}s reached after {cpu:.2f}s of CPU and "
            f"{waited:.2f}s waiting for a CPU: the host is overloaded",
        )
    return RunOutcome("time_limit", detail=f"wall-clock limit {limits.wall_s:g}s "
                      f"({cpu:.2f}s of CPU)")  # fmt: skip


def _signalled(sig: int, out: bytes, err: bytes, wall: float) -> RunOutcome:
    if sig in (signal.SIGXCPU, signal.SIGKILL):
        return RunOutcome("time_limit", signal=sig, stdout=out, stderr=err, wall_s=wall,
                          detail="CPU time limit")  # fmt: skip
    return RunOutcome("signalled", signal=sig, stdout=out, stderr=err, wall_s=wall)


def _parse_cases(report: bytes, count: int, limits: Limits) -> list[RunOutcome]:
    """The launcher's report (a header line per case, then its stdout and stderr), as
    outcomes, in order; it stops at the first case not reported whole (or not run)."""
    outcomes: list[RunOutcome] = []
    at = 0
    while len(outcomes) < count:
        end = report.find(b"\n", at)
        if end < 0:
            break
        fields = report[at:end].split()
        if len(fields) != 11 or fields[0] != b"case" or fields[1] != str(len(outcomes)).encode():
            break  # "wiped-not", "changed": the next cases run in sandboxes of their own
        kind = fields[2].decode(errors="replace")
        try:
            code, cpu_us, wait_us, wall_us, procs, cpus, n_out, n_err = (int(f) for f in fields[3:])
        except ValueError:
            break
        out = report[end + 1 : end + 1 + n_out]
        err = report[end + 1 + n_out : end + 1 + n_out + n_err]
        if len(out) != n_out or len(err) != n_err or kind == "error":
            break
        at = end + 1 + n_out + n_err
        wall = wall_us / 1e6
        if kind == "exit":
            outcome = RunOutcome("finished", exit_code=code, stdout=out, stderr=err, wall_s=wall)
        elif kind == "signal":
            outcome = _signalled(code, out, err, wall)
        elif kind in ("wall", "output"):
            why = (_output_over(limits) if kind == "output" else
                   _wall_verdict(cpu_us / 1e6, wait_us / 1e6, procs, cpus, limits))  # fmt: skip
            outcome = RunOutcome(why.status, stdout=out, stderr=err, wall_s=wall,
                                 detail=why.detail)  # fmt: skip
        else:
            break
        outcomes.append(outcome)
    return outcomes
