"""Small builders shared by the tests."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import regex

from referee.scorers.base import ScoreInput


def score_input(
    response: str,
    reference: str | None = None,
    id: str = "i",
    *,
    prompt: str = "",
    group: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> ScoreInput:
    """A ScoreInput with only what a test cares about set."""
    return ScoreInput(id=id, prompt=prompt, response=response, reference=reference,
                      group=group, messages=None, metadata=metadata)  # fmt: skip


@contextmanager
def busy_matching_threads(n: int = 3) -> Iterator[None]:
    """``n`` threads matching a catastrophic pattern over and over, as a server's worker
    threads do under load (``regex`` releases the GIL: they burn CPU in parallel)."""
    stop = threading.Event()
    catastrophic = regex.compile(r"(a|aa)+$")

    def burn() -> None:
        while not stop.is_set():
            try:
                catastrophic.search("a" * 40 + "b", timeout=0.2)
            except TimeoutError:
                pass

    threads = [threading.Thread(target=burn, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()


def sandbox_uid_processes(uid: int = 65534, *, waiting_too: bool = False) -> list[str]:
    """Command lines of the processes of the sandbox uid. Sandboxes made ahead of their
    run (bwrap with ``--block-fd``, set up and waiting, with no process but bwrap's own
    in them) are left out unless ``waiting_too``: they hold no program, and a run never
    reuses one. Anything a run left behind (its program, a background process) counts."""
    procs: dict[int, tuple[int, str]] = {}  # pid -> (ppid, cmdline)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            ppid = int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        procs[int(name)] = (ppid, cmdline)

    def waiting(pid: int) -> bool:
        cmdline = procs[pid][1]
        if "bwrap" not in cmdline.split(" ", 1)[0] or " --block-fd " not in cmdline:
            return False
        children = [p for p, (ppid, _) in procs.items() if ppid == pid]
        return all(waiting(child) for child in children)

    return [cmd for pid, (_, cmd) in procs.items() if waiting_too or not waiting(pid)]
