"""Sandboxes made ahead of their run, each used for exactly one run.

Making a sandbox (starting bwrap, creating its namespaces and mounts) takes a few
milliseconds, most of them before the program can start. A :class:`Pool` keeps up to
``size`` sandboxes per kind of run (the same command, limits and read-only files) made
ahead: bwrap has built everything and waits (``--block-fd``) just before it would run the
program. A run takes one, fills its staging directory (a host directory of that sandbox
alone, mounted read-only: the program's files), and lets it go; the pool makes the next
one while that run goes on. A sandbox is never given a second run: after its run it is
killed and its staging directory removed, exactly as a sandbox made on the spot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from referee.scorers.execution._processes import kill_tree
from referee.scorers.execution._spawn import Child

__all__ = ["Pool", "Prepared", "WorkDir"]


@dataclass(eq=False)
class Prepared:
    """A started sandbox, waiting on ``block_w`` (bwrap) to run its program."""

    child: Child
    status_r: int | None  # bwrap's --json-status-fd (None: isolation none)
    block_w: int | None  # bwrap's --block-fd (None: it runs at once)
    staging: Path | None  # its own read-only files' host directory (None: the item's)

    def stage(self, work: Path, names: Iterable[str]) -> None:
        """Copy the run's files from ``work`` into this sandbox's staging directory (into
        the very files mounted read-only in it, so it sees them), executable as they were."""
        assert self.staging is not None
        for name in names:
            # The server (maybe root) reads a file a compile step (untrusted) may have
            # made: only a plain file with one link, never a symlink or a hard link to
            # a file of the host.
            fd = os.open(work / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as source:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                    raise OSError(f"{name} is not a plain file")
                with open(self.staging / name, "wb") as target:  # the mounted file itself
                    shutil.copyfileobj(source, target, 1 << 20)
            os.chmod(self.staging / name, 0o755 if info.st_mode & 0o111 else 0o644)

    def status(self) -> dict[str, int]:
        """bwrap's --json-status-fd documents so far (one per line), merged."""
        if self.status_r is None:
            return {}
        os.set_blocking(self.status_r, False)
        data = b""
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self.status_r, 65536):
                data += chunk
        status: dict[str, int] = {}
        for line in data.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    status.update({k: v for k, v in doc.items() if isinstance(v, int)})
        return status

    def release(self) -> None:
        """Let the program run."""
        if self.block_w is not None:
            with contextlib.suppress(OSError):  # bwrap already gone: its status says why
                os.write(self.block_w, b"x")
            os.close(self.block_w)
            self.block_w = None

    async def discard(self) -> None:
        """Kill what is left of it (its whole PID namespace) and free everything."""
        child = self.child
        if not child.exited.done():
            kill_tree(child.pid)
            child.kill()
            await asyncio.wait({child.exited}, timeout=5.0)
        self.close()

    def close(self) -> None:
        if not self.child.exited.done() and self.child.proc.poll() is None:
            kill_tree(self.child.pid)
            self.child.kill()
            with contextlib.suppress(Exception):
                self.child.proc.wait(5.0)
        with contextlib.suppress(Exception):  # its loop may be gone (a test's loop)
            self.child.close()
        for fd in (self.status_r, self.block_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.status_r = self.block_w = None
        if self.staging is not None:
            _remove_later(self.staging)
            self.staging = None


_remover: ThreadPoolExecutor | None = None


def _remove_later(path: Path) -> None:
    """Remove a staging directory off the event loop: unlinking a file that was a mount
    point in a sandbox waits for the kernel to detach it (~5 ms, mostly waiting), which
    a run need not wait for."""
    global _remover
    if _remover is None:
        _remover = ThreadPoolExecutor(1, thread_name_prefix="referee-staging-rm")
    try:
        _remover.submit(shutil.rmtree, path, ignore_errors=True)
    except RuntimeError:  # the interpreter is shutting down
        shutil.rmtree(path, ignore_errors=True)


class Pool:
    """Up to ``size`` prepared sandboxes for each of the ``max_kinds`` kinds of run used
    last (older kinds are closed); ``make(kind)`` prepares one."""

    def __init__(self, make: Callable[[Hashable], Prepared], size: int, max_kinds: int = 4) -> None:
        self.make = make
        self.size = size
        self.max_kinds = max_kinds
        self.ready: OrderedDict[Hashable, deque[Prepared]] = OrderedDict()
        self.loop: asyncio.AbstractEventLoop | None = None

    def take(self, kind: Hashable) -> Prepared | None:
        """A prepared sandbox of this kind (None: none ready; the caller makes one);
        another is made for the next run soon after."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # made on another loop: of no use on this one
            self.close_all()
            self.loop = loop
        queue = self.ready.setdefault(kind, deque())
        self.ready.move_to_end(kind)
        while len(self.ready) > self.max_kinds:
            _, old = self.ready.popitem(last=False)
            for stale in old:
                stale.close()
        box = None
        while queue and box is None:
            box = queue.popleft()
            if box.child.exited.done():  # it died waiting (killed from outside): not used
                box.close()
                box = None
        if self.size > 0:
            loop.call_soon(self._refill, kind)
        return box

    def _refill(self, kind: Hashable) -> None:
        queue = self.ready.get(kind)
        while queue is not None and len(queue) < self.size:
            try:
                queue.append(self.make(kind))
            except OSError:
                return

    def close_all(self) -> None:
        for queue in self.ready.values():
            for box in queue:
                box.close()
        self.ready.clear()

    async def close(self) -> None:
        boxes = [box for queue in self.ready.values() for box in queue]
        self.ready.clear()
        await asyncio.gather(*(box.discard() for box in boxes))


class WorkDir:
    """A private temporary directory, owned by the run uid when the server is root."""

    def __init__(self, owner: int | None) -> None:
        self.owner = owner
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="referee-run-"))
        if self.owner is not None:
            os.chown(self.path, self.owner, self.owner)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
