"""Small builders shared by the tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
