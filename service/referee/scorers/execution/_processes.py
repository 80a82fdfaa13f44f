"""The process tree of a sandboxed run, read from /proc: its CPU use, its wait for a CPU,
and killing it."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

__all__ = ["kill_tree", "proc_tree", "tree_usage"]


def proc_tree(root: int) -> list[int]:
    """``root`` and its descendants, read from /proc (racy by nature: best effort)."""
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                    stack.extend(int(c) for c in children)
    return pids


def tree_usage(root: int) -> tuple[float, float]:
    """(CPU seconds used, seconds spent runnable but waiting for a CPU) of the tree."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = wait = 0.0
    for pid in proc_tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            wait += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    return cpu, wait


def kill_tree(root: int) -> None:
    # Killing the sandbox's init (a child of bwrap) tears down its whole PID namespace.
    for pid in reversed(proc_tree(root)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
