"""referee.heap: the start-up heap frozen out of the cyclic collector, and a retired
version's reference cycles freed again by refreeze(). In a child process: freezing is
process-wide, and the test process must keep collecting its own garbage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import gc, weakref
from referee import heap

class Model:  # a retired model version whose objects hold a reference cycle
    pass

assert heap.is_frozen() is False
heap.refreeze()  # not frozen: nothing happens
assert gc.get_freeze_count() == 0

model = Model(); model.self = model
alive = weakref.ref(model)
heap.freeze(4000)
assert heap.is_frozen() and gc.get_freeze_count() > 1000, gc.get_freeze_count()
assert gc.get_threshold()[0] == 4000
del model
gc.collect()
assert alive() is not None, "a frozen cycle is skipped by the collector"

late = Model(); late.self = late  # made after start-up: collected as usual
late_alive = weakref.ref(late)
del late
gc.collect()
assert late_alive() is None

heap.refreeze()  # after a live reload retired the old version
assert alive() is None, "refreeze frees the retired version's cycles"
assert gc.get_freeze_count() > 1000
print("ok")
"""


def test_freeze_skips_start_up_cycles_and_refreeze_frees_retired_ones() -> None:
    env = {"PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'clients'}"}
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
