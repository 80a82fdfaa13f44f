"""The admission controller on its own: the memory bound, the predicted-time refusal with
its Retry-After, waiting in order for a slot, a waiter answered 504 at its deadline, and
the slot limit following the event loop's lag."""

from __future__ import annotations

import asyncio
import time

import pytest

from referee.admission import AdmissionController
from referee.config import ServerSettings
from referee.errors import ErrorKind, RefereeError
from referee.metrics import Metrics


def controller(**server: object) -> AdmissionController:
    settings = ServerSettings.model_validate(
        {"max_request_bytes": 1000, "max_admitted_bytes": 1000, **server}
    )
    return AdmissionController(settings, Metrics())


async def test_admitted_bytes_are_bounded_but_one_request_always_fits() -> None:
    door = controller(max_concurrent_requests=8)
    first = await door.admit(900, time.monotonic())  # alone: admitted even if large
    with pytest.raises(RefereeError) as refused:
        await door.admit(200, time.monotonic())
    assert refused.value.kind is ErrorKind.OVERLOADED
    assert "memory bound" in refused.value.message
    first.release()
    (await door.admit(200, time.monotonic())).release()
    assert door.admitted_bytes == 0 and door.in_service == 0


async def test_refused_at_once_when_predicted_past_half_the_deadline() -> None:
    door = controller(max_concurrent_requests=1, request_timeout_s=10.0)
    door.rate = 100.0  # bytes a second, as if measured
    busy = await door.admit(300, time.monotonic())  # 3 s of work in service
    # 300 in service (half done on average) + 300 of its own: 4.5 s <= 5 s: may wait
    assert door.refusal(300, time.monotonic()) is None
    waiting = asyncio.ensure_future(door.admit(300, time.monotonic()))
    await asyncio.sleep(0)
    # now 900 bytes ahead: 7.5 s > 5 s, refused at once, retry when the excess has drained
    refused = door.refusal(300, time.monotonic())
    assert refused is not None and refused.kind is ErrorKind.OVERLOADED
    assert refused.retry_after_s == pytest.approx(2.5, abs=0.1)
    busy.release()
    (await waiting).release()  # the waiter got the slot when it was freed


async def test_max_queue_wait_caps_the_wait_when_set() -> None:
    for wait_s, refused in ((None, False), (1.0, True)):
        door = controller(max_concurrent_requests=1, max_queue_wait_s=wait_s)
        door.rate = 100.0
        busy = await door.admit(100, time.monotonic())
        # 100 in service (half done) + 100 of its own: ~1.5 s, within half of 120 s
        assert (door.refusal(100, time.monotonic()) is not None) is refused, wait_s
        busy.release()


async def test_a_waiter_still_without_a_slot_at_its_deadline_gets_504() -> None:
    door = controller(max_concurrent_requests=1, request_timeout_s=0.2)
    busy = await door.admit(10, time.monotonic())
    t0 = time.monotonic()
    with pytest.raises(RefereeError) as late:
        await door.admit(10, t0)
    assert late.value.kind is ErrorKind.TIMEOUT
    assert 0.15 < time.monotonic() - t0 < 0.5
    assert door.waiting == 0 and door.waiting_bytes == 0
    busy.release()


async def test_slots_shrink_while_the_loop_is_busy_and_lagging() -> None:
    door = controller(max_concurrent_requests=64)
    ticket = await door.admit(10, time.monotonic())  # starts the loop watcher
    start = door.limit
    until = time.monotonic() + 0.6
    while time.monotonic() < until:  # our own CPU work blocks the loop in 50 ms turns
        spin = time.monotonic() + 0.05
        while time.monotonic() < spin:
            pass
        await asyncio.sleep(0)
    assert door.limit < start, (start, door.limit, door.lag_s, door.busy_share)
    assert door.limit >= 2
    ticket.release()
    await door.close()
