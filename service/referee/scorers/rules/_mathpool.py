"""A small pool of worker processes with a hard per-call deadline, for the ``math`` scorer.

math-verify interrupts slow parsing and comparison with ``signal.alarm``, which works only
on a process's main thread, so each check runs on the main thread of a worker process.
The parent waits on the worker's pipe without blocking the event loop (``add_reader``);
a worker that does not answer by the deadline (stuck in C code, signals ignored) is
killed and replaced, and so is one that crashes. Workers are started with "spawn": the
server has threads, and forking a threaded process is unsafe.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Generic, Literal, TypeVar, cast

__all__ = ["Outcome", "WorkerPool"]

log = logging.getLogger(__name__)

CtxT = TypeVar("CtxT")
ReqT = TypeVar("ReqT")
RepT = TypeVar("RepT")

_READY = "ready"
_PING = "ping"


@dataclass(frozen=True, slots=True)
class Outcome(Generic[RepT]):
    """How one call ended: ``ok`` (with ``reply``), ``timeout``, ``crashed`` or ``error``
    (the handler raised; ``detail`` says what)."""

    status: Literal["ok", "timeout", "crashed", "error"]
    reply: RepT | None = None
    detail: str = ""
    cpu_s: float | None = None  # on a timeout: the CPU time the worker spent on the call


def _serve(
    conn: Connection,
    handler: Callable[[CtxT, ReqT], RepT],
    context: CtxT,
    warmup: ReqT,
) -> None:
    """The worker's main loop: answer each request with ``("ok", reply)`` or ``("error", msg)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    try:
        handler(context, warmup)  # load lazy imports and parser tables before the first item
    except Exception:
        log.exception("math worker warm-up failed")
    conn.send(_READY)
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the parent went away
            return
        if request == _PING:
            conn.send(_READY)
            continue
        try:
            conn.send(("ok", handler(context, request)))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a late alarm's exception included
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


@dataclass(eq=False, slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection


class WorkerPool(Generic[CtxT, ReqT, RepT]):
    """``size`` processes each running ``handler(context, request)``, one request at a time.

    ``handler``, ``context`` and ``warmup`` must be picklable (``handler`` a module-level
    function). Use from one event loop at a time.
    """

    def __init__(
        self,
        handler: Callable[[CtxT, ReqT], RepT],
        context: CtxT,
        *,
        warmup: ReqT,
        size: int,
        start_timeout_s: float = 120.0,
        name: str = "referee-math",
    ) -> None:
        self._handler = handler
        self._context = context
        self._warmup = warmup
        self.size = size
        self._start_timeout_s = start_timeout_s
        self._name = name
        self._mp = multiprocessing.get_context("spawn")
        self._idle: asyncio.Queue[_Worker] | None = None
        self._live: set[_Worker] = set()
        self._respawns: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._closed = False
        self._idle = asyncio.Queue()
        started = await asyncio.gather(
            *(self._spawn() for _ in range(self.size)), return_exceptions=True
        )
        workers = [w for w in started if isinstance(w, _Worker)]
        if len(workers) < self.size:
            await asyncio.to_thread(_stop, workers)
            failure = next(e for e in started if isinstance(e, BaseException))
            raise RuntimeError(f"math workers failed to start: {failure}") from failure
        for worker in workers:
            self._live.add(worker)
            self._idle.put_nowait(worker)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self, every_s: float = 0.5) -> None:
        """Replace workers that die while idle (OOM killer, an operator), so the pool is
        back to full strength, and health says so, without waiting for the next item."""
        while not self._closed:
            await asyncio.sleep(every_s)
            for worker in list(self._live):
                if not worker.process.is_alive():
                    self._replace(worker)

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for task in list(self._respawns):
            task.cancel()
        await asyncio.gather(*self._respawns, return_exceptions=True)
        workers, self._live = list(self._live), set()
        await asyncio.to_thread(_stop, workers)
        self._idle = None

    def alive(self) -> int:
        return sum(1 for w in self._live if w.process.is_alive())

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._live if w.process.pid is not None]

    # -- calls -----------------------------------------------------------------------
    async def call(self, request: ReqT, deadline_s: float) -> Outcome[RepT]:
        """Run one request on an idle worker; never raises for a slow or dead worker.

        A worker that dies under a request is replaced and the request tried once more on
        another: a worker killed from outside (the OOM killer, an operator) can look alive
        until the kernel reaps it, and its death is not the item's fault. An item that
        crashes two workers is answered "crashed"."""
        outcome = await self._call_once(request, deadline_s)
        if outcome.status == "crashed":
            # Workers killed together (an OOM kill of the group) die a moment apart: the
            # retry only goes to a worker that has just answered a ping.
            outcome = await self._call_once(request, deadline_s, verify=True)
        return outcome

    async def _call_once(
        self, request: ReqT, deadline_s: float, *, verify: bool = False
    ) -> Outcome[RepT]:
        worker = await self._take()
        while verify:
            try:
                ok = await self._answers(worker)
            except BaseException:  # cancelled mid-ping: a late pong would confuse the next
                self._replace(worker)
                raise
            if ok:
                break
            self._replace(worker)
            worker = await self._take()
        before = _cpu_seconds(worker.process.pid)
        try:
            worker.conn.send(request)
            message = await _receive(worker.conn, deadline_s)
        except asyncio.TimeoutError:
            after = _cpu_seconds(worker.process.pid)
            used = None if before is None or after is None else after - before
            self._replace(worker)
            return Outcome("timeout", cpu_s=used)
        except (EOFError, OSError):
            self._replace(worker)
            await asyncio.to_thread(worker.process.join, 1.0)
            return Outcome("crashed", detail=f"exit code {worker.process.exitcode}")
        except BaseException:  # cancelled mid-call: its late reply would confuse the next one
            self._replace(worker)
            raise
        self._release(worker)
        status, payload = message if isinstance(message, tuple) else ("error", message)
        if status == "ok":
            return Outcome("ok", reply=cast(RepT, payload))
        return Outcome("error", detail=str(payload))

    async def _take(self) -> _Worker:
        if self._idle is None:
            raise RuntimeError("the math worker pool is not started (call setup() first)")
        while True:
            worker = await self._idle.get()
            if worker not in self._live:
                continue  # already replaced (found dead by the watcher)
            # A killed worker's pipe reads as closed before the process is reaped.
            if worker.process.is_alive() and not worker.conn.poll():
                return worker
            self._replace(worker)  # died while idle: not the next item's fault

    async def _answers(self, worker: _Worker, timeout_s: float = 2.0) -> bool:
        try:
            worker.conn.send(_PING)
            return await _receive(worker.conn, timeout_s) == _READY
        except (asyncio.TimeoutError, EOFError, OSError):
            return False

    def _release(self, worker: _Worker) -> None:
        if self._idle is not None and worker in self._live:
            self._idle.put_nowait(worker)

    # -- worker processes --------------------------------------------------------------
    async def _spawn(self) -> _Worker:
        parent, child = self._mp.Pipe(duplex=True)
        process = self._mp.Process(
            target=_serve,
            args=(child, self._handler, self._context, self._warmup),
            name=self._name,
            daemon=True,
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        try:
            ready = await _receive(parent, self._start_timeout_s)
            if ready != _READY:
                raise RuntimeError(f"unexpected first message {ready!r}")
        except BaseException as exc:
            await asyncio.to_thread(_stop, [worker])
            if isinstance(exc, (EOFError, OSError)):
                raise RuntimeError(f"worker exited at start (code {process.exitcode})") from exc
            raise
        return worker

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` and start a replacement in the background (once per worker)."""
        if worker not in self._live:
            return
        self._live.discard(worker)
        if worker.process.is_alive():
            worker.process.kill()
        worker.conn.close()
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self._respawn(worker))
            self._respawns.add(task)
            task.add_done_callback(self._respawns.discard)

    async def _respawn(self, old: _Worker) -> None:
        await asyncio.to_thread(old.process.join, 5.0)
        delay = 0.5
        while not self._closed:
            try:
                worker = await self._spawn()
            except Exception:
                log.exception("could not start a replacement math worker; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self._closed or self._idle is None:
                await asyncio.to_thread(_stop, [worker])
                return
            self._live.add(worker)
            self._idle.put_nowait(worker)
            return


async def _receive(conn: Connection, timeout_s: float) -> object:
    """``conn.recv()`` once the pipe is readable (a message or EOF), without blocking the loop."""
    if not conn.poll():
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        fd = conn.fileno()
        loop.add_reader(fd, wake)
        try:
            await asyncio.wait_for(readable, timeout_s)
        finally:
            loop.remove_reader(fd)
    return conn.recv()


def _stop(workers: list[_Worker]) -> None:
    """Terminate workers (SIGTERM, then SIGKILL after a second); blocking."""
    for worker in workers:
        if worker.process.is_alive():
            worker.process.terminate()
    for worker in workers:
        worker.process.join(1.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(1.0)
        worker.conn.close()


def _cpu_seconds(pid: int | None) -> float | None:
    """The user + system CPU time a live process has used (Linux ``/proc``), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (OSError, TypeError):
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
