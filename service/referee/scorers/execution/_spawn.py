"""A child process with piped stdin/stdout/stderr, driven straight from the event loop.

``asyncio.create_subprocess_exec`` costs ~1 ms of the server's CPU a run (transports,
protocols, stream readers and, on the default loop, a watcher thread per child). Here the
process is started with ``subprocess.Popen`` (``vfork`` + ``exec``: no copy of the
server's memory), its pipes are non-blocking file descriptors watched with
``loop.add_reader``/``add_writer``, and its exit is a ``pidfd`` becoming readable. It
works the same on asyncio's own loop and on uvloop. Output past a cap is drained and
dropped (the pipe is read to its end, so a writer never blocks on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Child"]

_CHUNK = 64 * 1024


class Child:
    """``argv`` started now; :meth:`start_reading` collects its output, :meth:`feed` its input."""

    def __init__(
        self, argv: Sequence[str], *, cwd: str | os.PathLike[str], env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
    ) -> None:  # fmt: skip
        self.loop = asyncio.get_running_loop()
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=dict(env), pass_fds=tuple(pass_fds), start_new_session=True,
            bufsize=0,
        )  # fmt: skip
        self.pid = self.proc.pid
        self.out = bytearray()
        self.err = bytearray()
        self.exited: asyncio.Future[int] = self.loop.create_future()
        self.output_over: asyncio.Future[None] = self.loop.create_future()
        self._open: dict[int, asyncio.Future[None]] = {}
        self._watched: list[tuple[str, int]] = []
        self._pidfd = os.pidfd_open(self.pid)
        self._watch("r", self._pidfd, self._on_exit)

    # -- watching fds ------------------------------------------------------------------
    def _watch(self, mode: str, fd: int, callback: object) -> None:
        if mode == "r":
            self.loop.add_reader(fd, callback)  # type: ignore[arg-type]
        else:
            self.loop.add_writer(fd, callback)  # type: ignore[arg-type]
        self._watched.append((mode, fd))

    def _unwatch(self, mode: str, fd: int) -> None:
        if (mode, fd) in self._watched:
            self._watched.remove((mode, fd))
            (self.loop.remove_reader if mode == "r" else self.loop.remove_writer)(fd)

    def _on_exit(self) -> None:
        self._unwatch("r", self._pidfd)
        code = self.proc.poll()
        if code is None:  # pidfd readable means it has exited; poll once more
            code = self.proc.wait()
        if not self.exited.done():
            self.exited.set_result(code)

    # -- pipes -------------------------------------------------------------------------
    def start_reading(self, output_cap: int, stderr_cap: int) -> None:
        """Read stdout (keeping ``output_cap`` + 1 bytes; past the cap ``output_over`` is
        set) and stderr (keeping ``stderr_cap``) as they come, to their end."""
        stdout, stderr = self.proc.stdout, self.proc.stderr
        assert stdout is not None and stderr is not None
        for pipe in (stdout, stderr):
            os.set_blocking(pipe.fileno(), False)
        self._reader(stdout.fileno(), self.out, output_cap + 1, over_at=output_cap)
        self._reader(stderr.fileno(), self.err, stderr_cap, over_at=None)

    def feed(self, stdin: bytes) -> None:
        """Write ``stdin`` as the program reads it, then close it."""
        assert self.proc.stdin is not None
        os.set_blocking(self.proc.stdin.fileno(), False)
        self._writer(self.proc.stdin.fileno(), memoryview(stdin))

    def _reader(self, fd: int, into: bytearray, keep: int, over_at: int | None) -> None:
        done = self._open[fd] = self.loop.create_future()

        def readable() -> None:
            while True:
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    return
                except OSError:
                    chunk = b""
                if not chunk:
                    self._unwatch("r", fd)
                    if not done.done():
                        done.set_result(None)
                    return
                if len(into) < keep:
                    into.extend(chunk[: keep - len(into)])
                if over_at is not None and len(into) > over_at and not self.output_over.done():
                    self.output_over.set_result(None)

        self._watch("r", fd, readable)

    def _writer(self, fd: int, data: memoryview) -> None:
        state = {"at": 0}

        def finish() -> None:
            self._unwatch("w", fd)
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]

        def writable() -> None:
            while state["at"] < len(data):
                try:
                    state["at"] += os.write(fd, data[state["at"] : state["at"] + _CHUNK])
                except BlockingIOError:
                    return
                except OSError:  # the program closed its stdin or exited: stop feeding
                    break
            finish()

        if len(data) == 0:
            finish()
        else:
            self._watch("w", fd, writable)

    async def output_closed(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for stdout and stderr to reach their end."""
        pending = [f for f in self._open.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    # -- the end -----------------------------------------------------------------------
    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def close(self) -> None:
        """Stop watching and close this side's fds (the process must have exited)."""
        for mode, fd in list(self._watched):
            with contextlib.suppress(Exception):  # its loop may be closed (a test's loop)
                self._unwatch(mode, fd)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(OSError):
            os.close(self._pidfd)
        futures: list[asyncio.Future[Any]] = [*self._open.values(), self.exited, self.output_over]
        for future in futures:
            if not future.done():
                future.cancel()
