"""The server process's start-up heap, frozen out of the cyclic garbage collector.

A full (oldest-generation) collection walks every object the collector tracks: after
start-up that is tens of thousands of module, schema and model objects, and walking them
takes 20-50 ms on a busy 2-core machine. Under load such a collection comes every few
seconds, at a random moment, and everything the event loop has to do waits for it
(rejections at the door included: it was the tail of the overload benchmark's rejection
latency). ``gc.freeze()`` after start-up moves those objects to a permanent generation the
collector skips; they are still freed by reference counting. Objects made later (requests,
results) are collected as usual.

After a live reload has retired an old version, :func:`refreeze` hands the frozen objects
back to the collector once, so that reference cycles among the retired model's objects are
freed, then freezes what is left.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["freeze", "is_frozen", "refreeze"]

log = logging.getLogger(__name__)
_frozen = False


def freeze(young_threshold: int | None = None) -> None:
    """Collect once, then freeze everything that survives (call when start-up is done).
    ``young_threshold``: allocations between young-generation collections (Python: 700);
    a request's objects mostly die young by reference counting, and collecting them less
    often promotes fewer to the older generations, whose collections are the long pauses."""
    global _frozen
    t0 = time.perf_counter()
    if young_threshold is not None:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)
    gc.collect()
    gc.freeze()
    _frozen = True
    log.info("froze %d start-up objects out of the garbage collector in %.0f ms",
             gc.get_freeze_count(), 1000 * (time.perf_counter() - t0))  # fmt: skip


def is_frozen() -> bool:
    return _frozen


def refreeze() -> None:
    """When this process froze its heap: unfreeze, collect (retired objects' cycles
    included) and freeze again. A no-op otherwise (tests, the CLI)."""
    if not _frozen:
        return
    gc.unfreeze()
    freeze()
