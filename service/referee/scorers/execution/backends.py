"""Where programs run: the local bubblewrap sandbox (default) or a SandboxFusion service.

A backend compiles a source once and runs it on each stdin, giving one :class:`CaseRun`
per run: a run-level verdict (``ok``: exited 0, its stdout is to be compared), or no
verdict at all (``failure``: the sandbox or the service could not run it, an overloaded
host), which the scorer turns into a per-item error, never a reward.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from referee.scorers.base import deadline_passed, past_deadline_result
from referee.scorers.execution._seccomp import FILTER
from referee.scorers.execution.languages import Language
from referee.scorers.execution.sandbox import Limits, RunOutcome, Sandbox

__all__ = ["Backend", "CaseRun", "LocalBackend", "RunVerdict", "verdict_of"]

RunVerdict = Literal[
    "ok", "runtime_error", "time_limit", "memory_limit", "output_limit", "compile_error"
]
_MEMORY_SIGNS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")


@dataclass(frozen=True, slots=True)
class CaseRun:
    """One run's result. ``failure``: no verdict (``failure_type`` is the error type)."""

    verdict: RunVerdict | None
    stdout: str = ""
    stderr: str = ""
    detail: str = ""
    wall_s: float = 0.0
    failure: str | None = None
    failure_type: str = "sandbox_error"


def verdict_of(outcome: RunOutcome) -> CaseRun:
    """A local sandbox outcome as a case run."""
    out = outcome.stdout.decode(errors="replace")
    err = outcome.stderr.decode(errors="replace")
    tail = err[-2000:]
    if outcome.status == "error":
        return CaseRun(None, failure=outcome.detail, failure_type="sandbox_error")
    if outcome.status == "overloaded":
        return CaseRun(None, failure=outcome.detail, failure_type="overloaded")
    if outcome.status == "deadline":
        return CaseRun(None, failure=outcome.detail, failure_type="timeout")
    if outcome.status in ("time_limit", "output_limit"):
        return CaseRun(outcome.status, out, tail, outcome.detail, outcome.wall_s)
    if any(sign in err for sign in _MEMORY_SIGNS) or (
        outcome.status == "signalled" and "bad_alloc" in err
    ):
        return CaseRun("memory_limit", out, tail, "memory limit", outcome.wall_s)
    if outcome.status == "signalled":
        return CaseRun("runtime_error", out, tail, f"killed by signal {outcome.signal}",
                       outcome.wall_s)  # fmt: skip
    if outcome.exit_code != 0:
        return CaseRun("runtime_error", out, tail, f"exit code {outcome.exit_code}",
                       outcome.wall_s)  # fmt: skip
    return CaseRun("ok", out, tail, "", outcome.wall_s)


class Backend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def health(self) -> dict[str, object]: ...

    async def execute(
        self, language: Language, language_name: str, source: str, stdins: Sequence[str],
        stop: Callable[[int, CaseRun], bool] | None = None,
    ) -> list[CaseRun]:  # fmt: skip
        """Compile ``source`` once and run it on each stdin. When the compile step fails,
        one run (compile_error or a failure) stands for all. With ``stop``, runs go one
        at a time and end after the first for which ``stop(index, run)`` is true."""
        ...


class LocalBackend:
    """Runs in the local sandbox, at most ``max_concurrency`` runs at a time."""

    def __init__(
        self, sandbox: Sandbox, *, limits: Limits, compile_limits: Limits, max_concurrency: int
    ) -> None:
        self.sandbox = sandbox
        self.limits = limits
        self.compile_limits = compile_limits
        self.max_concurrency = max_concurrency
        self._slots: asyncio.Semaphore | None = None
        self.started = False
        self.on_run: Callable[[float], None] = lambda wall_s: None

    async def start(self) -> None:
        await self.sandbox.check()
        self.started = True

    async def close(self) -> None:
        self.started = False
        await self.sandbox.close()

    def health(self) -> dict[str, object]:
        sandbox = self.sandbox
        seccomp = sandbox.isolation == "bwrap" and sandbox.seccomp and FILTER is not None
        return {"ready": self.started, "backend": "sandbox", "isolation": sandbox.isolation,
                "seccomp": "on" if seccomp else "off"}  # fmt: skip

    def _slot(self) -> asyncio.Semaphore:
        if self._slots is None:  # created on the loop that runs it
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._slots

    async def _run(self, argv: Sequence[str], **kwargs: object) -> RunOutcome:
        async with self._slot():
            if deadline_passed():  # waited for a slot past the request's deadline
                return RunOutcome("deadline", detail=past_deadline_result().error or "")
            outcome = await self.sandbox.run(argv, **kwargs)  # type: ignore[arg-type]
        self.on_run(outcome.wall_s)
        return outcome

    async def _run_cases(self, argv: Sequence[str], stdins: Sequence[str],
                         **kwargs: object) -> list[RunOutcome]:  # fmt: skip
        async with self._slot():
            if deadline_passed():
                why = past_deadline_result().error or ""
                return [RunOutcome("deadline", detail=why) for _ in stdins]
            outcomes = await self.sandbox.run_cases(
                argv,
                stdins=[s.encode() for s in stdins],
                **kwargs,  # type: ignore[arg-type]
            )
        for outcome in outcomes:
            self.on_run(outcome.wall_s)
        return outcomes

    async def execute(
        self, language: Language, language_name: str, source: str, stdins: Sequence[str],
        stop: Callable[[int, CaseRun], bool] | None = None,
    ) -> list[CaseRun]:  # fmt: skip
        with self.sandbox.work_dir() as work:
            (work / language.source).write_text(source, encoding="utf-8")
            artifact = language.source
            if language.compile is not None:
                built = await self._run(
                    language.compile, work=work, limits=self.compile_limits, writable_work=True
                )
                first = verdict_of(built)
                if first.verdict is None:
                    return [first]
                if first.verdict != "ok" or not (work / (language.artifact or "")).is_file():
                    why = first.stderr.strip()[-1500:] or first.detail or "no program produced"
                    return [CaseRun("compile_error", stderr=first.stderr, detail=why)]
                artifact = language.artifact or language.source
            binds = {artifact: f"/work/{artifact}"}
            made = work / artifact
            # not through a symlink the compile step (untrusted) may have left: root
            # would make the file it points to on the host world-readable
            if os.geteuid() == 0 and made.is_file() and not made.is_symlink():
                os.chmod(made, 0o755)

            async def one(stdin: str) -> CaseRun:
                outcome = await self._run(
                    language.run, work=work, limits=self.limits, stdin=stdin.encode(),
                    binds=binds,
                )  # fmt: skip
                return verdict_of(outcome)

            async def together(chunk: Sequence[str]) -> list[CaseRun]:
                """The chunk's cases in one sandbox; those it did not report (see
                Sandbox.run_cases) side by side, a sandbox each."""
                reported = await self._run_cases(language.run, chunk, work=work,
                                                 limits=self.limits, binds=binds)  # fmt: skip
                rest = await asyncio.gather(*(one(s) for s in chunk[len(reported) :]))
                return [*(verdict_of(o) for o in reported), *rest]

            if stop is None and len(stdins) > 1 and self.sandbox.runs_cases:
                # a sandbox for up to max_cases cases at a time, set up once for them
                size = self.sandbox.max_cases
                chunks = await asyncio.gather(
                    *(together(stdins[at : at + size]) for at in range(0, len(stdins), size))
                )
                return [run for chunk in chunks for run in chunk]
            if stop is None:
                return list(await asyncio.gather(*(one(s) for s in stdins)))
            runs: list[CaseRun] = []
            for index, stdin in enumerate(stdins):
                runs.append(await one(stdin))
                if stop(index, runs[-1]):
                    break
            return runs
