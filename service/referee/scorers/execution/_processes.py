"""The process tree of a sandboxed run, read from /proc: its CPU use, its wait for a CPU,
and killing it."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

__all__ = ["kill_tree", "proc_tree", "tree_usage"]


def proc_tree(root: int, skip: int = 0) -> list[int]:
    """``root`` and its descendants, read from /proc (racy by nature: best effort); with
    ``skip``, without the first ``skip`` generations (root is the first)."""
    pids, stack = [], [(root, 0)]
    while stack:
        pid, depth = stack.pop()
        if depth >= skip:
            pids.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                    stack.extend((int(c), depth + 1) for c in children)
    return pids


def tree_usage(root: int, skip: int = 0) -> tuple[float, float, int, int]:
    """Of the tree below its first ``skip`` generations: CPU seconds used, seconds spent
    runnable but waiting for a CPU, the number of processes, and how many CPUs they may
    run on together."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = wait = 0.0
    pids = proc_tree(root, skip)
    cpus: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            cpus |= os.sched_getaffinity(pid)
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            wait += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    return cpu, wait, len(pids), len(cpus)


def kill_tree(root: int) -> None:
    # Killing the sandbox's init (a child of bwrap) tears down its whole PID namespace.
    for pid in reversed(proc_tree(root)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
