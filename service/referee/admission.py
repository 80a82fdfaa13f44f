"""Admission control: decide at the door, before a body is read, whether a request can be
served within its deadline, and refuse it at once (429 with Retry-After) when not.

A request is admitted into a FIFO of bounded *predicted* wait: the work admitted ahead of
it (the body bytes of requests in service and waiting) divided by the measured throughput
(bytes finished per second of busy time). A request predicted to need more than half of
its deadline (``request_timeout_s`` from acceptance: the other half is headroom for
misprediction) or to wait longer than ``max_queue_wait_s``, or
that would take the admitted bytes over ``max_admitted_bytes``, is refused without
waiting. One admitted to wait is not refused later: it waits for a slot until its deadline
(then 504, as a request in service would get) or until ``max_queue_wait_s`` if set.

The slots (requests in service at once) follow the event loop: when it lags *and* the
lag is the loop's own work (its thread's CPU time, not other threads of the process) the
limit shrinks; when it is responsive and requests wait, it grows back, up to
``max_concurrent_requests``. A saturated loop answers every event late, rejections
included; short turns keep rejections fast, and a few requests in service keep a
CPU-bound loop as busy as many, while scorer-bound pipelines (a model, a process pool)
keep many in service for full batches.

``ACCEPTED_AT`` carries the moment the current request was accepted (``time.monotonic``)
to the engine, whose deadline counts from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import deque
from dataclasses import dataclass, field

from referee.config import ServerSettings
from referee.errors import ErrorKind, RefereeError
from referee.metrics import Metrics

__all__ = ["ACCEPTED_AT", "ADMISSION_STATE", "AdmissionController", "ItemBudget", "Ticket"]

ACCEPTED_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "referee_accepted_at", default=None
)

DEADLINE_SHARE = 0.5  # of its remaining deadline a request may be predicted to need: the
# rest is headroom for a throughput that drops while the request waits
# The key of the controller in the ASGI lifespan state (what the HTTP protocol reads).
ADMISSION_STATE = "referee_admission"
LAG_HIGH_S = 0.02  # loop lag above which the concurrency limit shrinks
LAG_LOW_S = 0.005  # below which (with requests waiting) it grows
_TICK_S = 0.01
_MIN_LIMIT = 2
_BUSY_SHARE = 0.6
_BUSY_SMOOTHING_S = 0.1  # time constant of the smoothed busy share
_RATE_WINDOW_S = 1.0  # busy seconds per throughput sample


@dataclass(eq=False)
class _Waiter:
    size: int
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Ticket:
    """An admitted request's hold on a slot and its bytes; ``release()`` once, when done."""

    def __init__(self, controller: AdmissionController, size: int) -> None:
        self._controller = controller
        self.size = size
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._controller._release(self.size)


class AdmissionController:
    def __init__(self, server: ServerSettings, metrics: Metrics | None = None) -> None:
        self.max_limit = server.max_concurrent_requests
        self.limit = min(8, self.max_limit)
        self.max_wait_s = math.inf if server.max_queue_wait_s is None else server.max_queue_wait_s
        self.max_bytes = server.max_admitted_bytes
        self.max_request_bytes = server.max_request_bytes
        self.request_timeout_s = server.request_timeout_s
        self.metrics = metrics
        self.in_service = 0
        self.in_service_bytes = 0
        self.waiting_bytes = 0
        self._waiters: deque[_Waiter] = deque()
        self.rate: float | None = None  # bytes per busy second, measured
        self._smoothed: float | None = None
        self._done_bytes = 0
        self._busy_s = 0.0
        self._busy_since: float | None = None
        self._monitor: asyncio.Task[None] | None = None
        self.lag_s = 0.0
        self.busy_share = 0.0  # of the loop thread's time spent on CPU, smoothed

    @property
    def admitted_bytes(self) -> int:
        return self.in_service_bytes + self.waiting_bytes

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def predicted_wait_s(self, extra_bytes: int = 0) -> float:
        """Seconds until the work admitted now (plus ``extra_bytes``) is done, at the
        measured throughput; 0 while nothing has been measured yet."""
        if not self.rate:
            return 0.0
        return (self.admitted_bytes + extra_bytes) / self.rate

    def refusal(self, size: int, accepted_at: float) -> RefereeError | None:
        """The refusal for a request of ``size`` body bytes accepted at ``accepted_at``
        that cannot be admitted now (memory bound, or predicted to miss its deadline or
        the wait limit), counted; None when it may be admitted or wait. The HTTP protocol
        asks this as soon as a head has arrived, and answers without starting the app."""
        if self.admitted_bytes + size > self.max_bytes and self.admitted_bytes > 0:
            return self._refusal("bytes", "admitted request bodies are at the memory bound",
                                 self.predicted_wait_s())  # fmt: skip
        if self.in_service < self.limit and not self._waiters:
            return None
        budget = self._budget(accepted_at)
        predicted = self.predicted_wait_s(size) - self._in_service_share()
        if budget <= 0 or predicted > budget:
            limit = max(budget, 0.0)
            message = f"the work ahead would take ~{predicted:.1f}s; the wait limit is {limit:g}s"
            return self._refusal("wait", message, predicted - limit)
        return None

    def _budget(self, accepted_at: float) -> float:
        remaining = self.request_timeout_s - (time.monotonic() - accepted_at)
        return min(self.max_wait_s, DEADLINE_SHARE * remaining)

    async def admit(self, size: int, accepted_at: float) -> Ticket:
        """A slot for a request of ``size`` body bytes accepted at ``accepted_at``, or
        RefereeError(OVERLOADED) with a retry hint, at once or when its wait runs out."""
        self._ensure_monitor()
        refused = self.refusal(size, accepted_at)
        if refused is not None:
            raise refused
        if self.in_service < self.limit and not self._waiters:
            return self._enter(size)
        # Admitted to wait: until a slot frees, or its deadline (then 504, as for a request
        # in service), or max_queue_wait_s when the operator set one (then 429).
        remaining = self.request_timeout_s - (time.monotonic() - accepted_at)
        wait_s = min(self.max_wait_s, remaining)
        waiter = _Waiter(size)
        self._waiters.append(waiter)
        self.waiting_bytes += size
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), max(wait_s, 0.0))
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                self._release(size, served=False)  # admitted as the wait ended: hand it on
            else:
                waiter.future.cancel()
                self._waiters.remove(waiter)
                self.waiting_bytes -= size
            if isinstance(exc, asyncio.CancelledError):
                raise
            if wait_s < remaining:
                raise self._refusal(
                    "wait", f"no slot within {wait_s:g}s", self.predicted_wait_s()
                ) from None
            raise RefereeError(
                ErrorKind.TIMEOUT,
                f"request waited its whole deadline ({self.request_timeout_s:g}s) for a slot",
                param="options.timeout_s",
            ) from None
        return Ticket(self, size)

    def _in_service_share(self) -> float:
        """The part of the prediction already being worked on: half of the in-service
        bytes, on average, are done."""
        if not self.rate:
            return 0.0
        return 0.5 * self.in_service_bytes / self.rate

    def _refusal(self, reason: str, message: str, retry_after_s: float) -> RefereeError:
        if self.metrics is not None:
            self.metrics.admission_refused.labels(reason).inc()
        retry = max(1.0, min(retry_after_s, 60.0)) if math.isfinite(retry_after_s) else 1.0
        return RefereeError(
            ErrorKind.OVERLOADED, f"server overloaded: {message}; retry later",
            retry_after_s=retry,
        )  # fmt: skip

    def _enter(self, size: int) -> Ticket:
        if self.in_service == 0:
            self._busy_since = time.monotonic()
        self.in_service += 1
        self.in_service_bytes += size
        self._gauges()
        return Ticket(self, size)

    def _release(self, size: int, *, served: bool = True) -> None:
        self.in_service -= 1
        self.in_service_bytes -= size
        if served:
            self._done_bytes += size
        if self.in_service == 0 and self._busy_since is not None:
            self._busy_s += time.monotonic() - self._busy_since
            self._busy_since = None
        self._sample_rate()
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_service < self.limit:
            waiter = self._waiters.popleft()
            self.waiting_bytes -= waiter.size
            if waiter.future.done():
                continue
            self._enter(waiter.size)
            waiter.future.set_result(None)
        self._gauges()

    def _sample_rate(self) -> None:
        busy = self._busy_s
        if self._busy_since is not None:
            busy += time.monotonic() - self._busy_since
        if busy < _RATE_WINDOW_S:
            return
        sample = self._done_bytes / busy
        self._smoothed = sample if self._smoothed is None else 0.7 * self._smoothed + 0.3 * sample
        # Predict with the lower of the smoothed rate and the latest: a burst of completions
        # must not admit more than the server can finish in time.
        self.rate = min(self._smoothed, sample)
        self._done_bytes = 0
        self._busy_s = 0.0
        if self._busy_since is not None:
            self._busy_since = time.monotonic()

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.admission_in_service.set(self.in_service)
            self.metrics.admission_waiting.set(len(self._waiters))
            self.metrics.admission_limit.set(self.limit)

    # -- the concurrency limit follows the event loop's lag ------------------------------
    def _ensure_monitor(self) -> None:
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        while True:
            before = time.monotonic()
            thread_before, process_before = time.thread_time(), time.process_time()
            await asyncio.sleep(_TICK_S)
            wall = time.monotonic() - before
            self.lag_s = wall - _TICK_S
            # How much of the lag is the loop's own work (smoothed): its thread's CPU time
            # against the wall clock, or, on a machine short of CPU, against this process's
            # CPU time. Lag from our own work is shortened by fewer requests in service;
            # lag from other threads of the process (a model's) is not. More requests in
            # service help only while the loop has CPU to spare.
            thread_cpu = time.thread_time() - thread_before
            process_cpu = time.process_time() - process_before
            busy = thread_cpu / wall
            if process_cpu > 0.001:
                busy = max(busy, thread_cpu / process_cpu)
            if self.metrics is not None:
                self.metrics.event_loop_lag.observe(max(self.lag_s, 0.0))
            self.busy_share += (1 - math.exp(-wall / _BUSY_SMOOTHING_S)) * (busy - self.busy_share)
            if self.lag_s > LAG_HIGH_S and self.busy_share > _BUSY_SHARE:
                self.limit = max(_MIN_LIMIT, int(self.limit * 0.75))
            elif (self.lag_s < LAG_LOW_S and self.busy_share < _BUSY_SHARE and self._waiters
                  and self.in_service >= self.limit and self.limit < self.max_limit):  # fmt: skip
                self.limit += 1
                self._wake()
            self._gauges()

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None


class ItemBudget:
    """Items of the requests being scored at once (``max_admitted_items``), counted by
    the engine for every transport once a request's items are known."""

    def __init__(self, limit: int, metrics: Metrics | None = None) -> None:
        self.limit = limit
        self.metrics = metrics
        self.in_use = 0

    def take(self, n: int) -> None:
        """Hold ``n`` items, or raise OVERLOADED (429) when they would pass the limit; a
        request alone is always let in (the config makes the limit fit the largest)."""
        if self.in_use and self.in_use + n > self.limit:
            if self.metrics is not None:
                self.metrics.admission_refused.labels("items").inc()
            raise RefereeError(
                ErrorKind.OVERLOADED,
                f"server overloaded: {self.in_use} items are being scored (limit "
                f"{self.limit}); retry later",
                retry_after_s=1.0,
            )
        self.in_use += n

    def give_back(self, n: int) -> None:
        self.in_use -= n
