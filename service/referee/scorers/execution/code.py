"""``code``: run the program in the response against the item's tests; reward the result.

The program is the last fenced block of the item's language (``extract``); the tests
come from ``metadata.tests`` or ``reference`` (verl's ``ground_truth`` JSON string works
as is; formats in :mod:`referee.scorers.execution.testcases`). The cases run in the
sandbox (:mod:`referee.scorers.execution.sandbox`; an item's stdin cases up to
``cases_per_sandbox`` at a time in one, each a fresh process) or on a SandboxFusion
service (``backend: sandbox_fusion``).

Reward: the share of cases passed (``reward: fraction``) or 1 only when all pass
(``all``); aspects ``pass_rate``, ``passed``, ``total``; ``reason`` names the first failing
case and its verdict (wrong_answer, runtime_error, time_limit, memory_limit,
output_limit, compile_error). No code in the response: ``reward_no_code`` with reason
``no_code``. Unreadable tests, an unknown language: a per-item error. A run that could
not decide (the sandbox failed, the host was overloaded, the service was down): a
per-item error (``sandbox_error``, ``overloaded``, ``sandbox_unavailable``), never a
reward.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, FiniteFloat, model_validator

from referee.metrics import Metrics
from referee.scorers.base import (
    ScoreInput,
    Scorer,
    ScoreResult,
    ScorerOptions,
    deadline_passed,
    past_deadline_result,
)
from referee.scorers.execution.backends import Backend, CaseRun, LocalBackend
from referee.scorers.execution.languages import BUILTIN_LANGUAGES, Language, toolchain_version
from referee.scorers.execution.sandbox import Limits, Sandbox
from referee.scorers.execution.testcases import (
    Case,
    TestFormatError,
    TestSuite,
    call_harness,
    call_matches,
    call_stdin,
    extract_code,
    outputs_match,
    parse_call_output,
    parse_tests,
)

__all__ = ["CodeScorer", "RunLimits"]

log = logging.getLogger(__name__)


class RunLimits(ScorerOptions):
    cpu_s: FiniteFloat = Field(
        default=2.0, gt=0, le=600, description="CPU seconds per run (whole seconds, at least 1)"
    )
    wall_s: FiniteFloat | None = Field(
        default=None, gt=0, le=3600, description="wall-clock per run (default 2 x cpu_s + 1)"
    )
    memory_mb: int = Field(default=512, ge=16, le=65536, description="address space")
    max_processes: int = Field(
        default=32, ge=1, le=4096, description="processes and threads a run may have at once"
    )
    file_size_mb: int = Field(default=16, ge=0, le=4096, description="largest file a run may write")
    open_files: int = Field(default=64, ge=8, le=65536, description="open file descriptors")
    output_bytes: int = Field(
        default=1 << 20, ge=1, le=1 << 30,
        description="stdout + stderr kept per run; more is cut (verdict output_limit)",
    )  # fmt: skip
    tmpfs_mb: int = Field(default=64, ge=1, le=65536, description="size of /work and /tmp")

    def limits(self) -> Limits:
        return Limits(
            cpu_s=self.cpu_s, wall_s=self.wall_s or 2 * self.cpu_s + 1,
            memory_mb=self.memory_mb, max_processes=self.max_processes,
            file_size_mb=self.file_size_mb, open_files=self.open_files,
            output_bytes=self.output_bytes, tmpfs_mb=self.tmpfs_mb,
        )  # fmt: skip


class CodeScorer(Scorer):
    kind = "code"
    reads = ("response", "reference", "metadata")
    implementation_version = "1"

    class Options(ScorerOptions):
        backend: Literal["sandbox", "sandbox_fusion"] = Field(
            default="sandbox",
            description="sandbox: bubblewrap on this host; sandbox_fusion: a SandboxFusion "
            "service at `endpoint`",
        )
        isolation: Literal["bwrap", "none"] = Field(
            default="bwrap",
            description="none: run WITHOUT namespaces (limits only); logged, shown in /readyz",
        )
        language: str = Field(default="python", description="unless metadata.language says")
        languages: dict[str, Language] = Field(
            default_factory=dict, description="added to (or replacing) python and cpp"
        )
        extract: Literal["last_block", "first_block", "whole", "regex"] = Field(
            default="last_block",
            description="where the program is in the response: the last or first fenced "
            "block of the language, the whole response, or `extract_regex`",
        )
        extract_regex: str | None = Field(default=None, description="group 1 is the code")
        tests_from: Literal["auto", "reference", "metadata"] = Field(
            default="auto", description="auto: metadata.tests when present, else reference"
        )
        compare: Literal["exact", "lines", "float"] = Field(
            default="lines",
            description="stdout vs expected: exact text, lines (compared line by line as "
            "whitespace-split tokens, trailing blank lines ignored), or float (numbers "
            "within float_tolerance)",
        )
        float_tolerance: FiniteFloat = Field(
            default=1e-6, ge=0, description="absolute/relative tolerance of compare: float"
        )
        reward: Literal["fraction", "all"] = Field(
            default="fraction", description="fraction of cases passed, or 1 only if all pass"
        )
        reward_no_code: FiniteFloat = Field(
            default=0.0, description="reward when the response holds no program (with a reason)"
        )
        fail_fast: bool = Field(default=False, description="stop at the first failing case")
        max_cases: int = Field(
            default=100, ge=1, le=10_000, description="more test cases than this: invalid item"
        )
        limits: RunLimits = Field(default_factory=RunLimits, description="limits of each run")
        compile_limits: RunLimits = Field(
            default_factory=lambda: RunLimits(cpu_s=20, memory_mb=4096, max_processes=64),
            description="limits of the compile step (compiled languages)",
        )
        max_concurrency: int = Field(
            default_factory=lambda: os.cpu_count() or 1, ge=1, le=4096,
            description="sandboxed runs at once (default: the number of cores)",
        )  # fmt: skip
        cases_per_sandbox: int = Field(
            default=8, ge=1, le=64,
            description="stdin cases of one item run one after another in one sandbox, "
            "each a fresh process with its own limits, its leftovers killed and /work, /tmp "
            "emptied between them (the sandbox is set up once, not per case); 1: a sandbox "
            "per case",
        )  # fmt: skip
        run_as_uid: int = Field(default=65534, ge=1, description="when the server is root")
        # SandboxFusion (backend: sandbox_fusion)
        endpoint: str | None = Field(default=None, description="e.g. http://host:8080")
        request_timeout_s: FiniteFloat = Field(
            default=30.0, gt=0, le=3600, description="per SandboxFusion request"
        )
        retries: int = Field(
            default=3, ge=0, le=10, description="SandboxFusion retries on 5xx and timeouts"
        )

        @model_validator(mode="after")
        def _consistent(self) -> CodeScorer.Options:
            if self.language not in self.all_languages():
                raise ValueError(
                    f"language {self.language!r} is not in the language table "
                    f"({sorted(self.all_languages())})"
                )
            if self.extract == "regex":
                if not self.extract_regex:
                    raise ValueError("extract: regex needs extract_regex")
                try:
                    re.compile(self.extract_regex)
                except re.error as exc:
                    raise ValueError(f"extract_regex: {exc}") from None
            if self.backend == "sandbox_fusion" and not self.endpoint:
                raise ValueError("backend: sandbox_fusion needs endpoint")
            return self

        def all_languages(self) -> dict[str, Language]:
            return {**BUILTIN_LANGUAGES, **self.languages}

    def __init__(self, name: str, options: ScorerOptions) -> None:
        if not isinstance(options, CodeScorer.Options):
            raise TypeError(f"{type(self).__name__} needs {type(self).__name__}.Options")
        super().__init__(name, options)
        self.opts = options
        self.languages = options.all_languages()
        self._pattern = re.compile(options.extract_regex, re.S) if options.extract_regex else None
        self.backend: Backend = self._make_backend()
        self._runs: Any = None
        self._wall: Any = None

    def _make_backend(self) -> Backend:
        o = self.opts
        if o.backend == "sandbox_fusion":
            from referee.scorers.execution.sandbox_fusion import SandboxFusionBackend

            assert o.endpoint is not None
            return SandboxFusionBackend(
                o.endpoint, limits=o.limits.limits(), compile_limits=o.compile_limits.limits(),
                max_concurrency=o.max_concurrency, timeout_s=o.request_timeout_s,
                retries=o.retries,
            )  # fmt: skip
        # One sandbox made ahead per slot: a run takes one already set up (never reused).
        sandbox = Sandbox(
            isolation=o.isolation,
            run_as_uid=o.run_as_uid,
            prestart=o.max_concurrency,
            max_cases=o.cases_per_sandbox,
        )
        backend = LocalBackend(
            sandbox, limits=o.limits.limits(), compile_limits=o.compile_limits.limits(),
            max_concurrency=o.max_concurrency,
        )  # fmt: skip
        backend.on_run = self._observe_wall
        return backend

    # -- lifecycle ---------------------------------------------------------------------
    async def setup(self) -> None:
        if self.opts.backend == "sandbox" and self.opts.isolation == "none":
            log.warning(
                "scorer %s: isolation: none: programs run WITHOUT a sandbox (limits only); "
                "never use this for untrusted code", self.name,
            )  # fmt: skip
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()

    def health(self) -> dict[str, object]:
        health = self.backend.health()
        if self.opts.backend == "sandbox" and self.opts.isolation == "none":
            health["warning"] = "isolation: none: programs run without a sandbox"
        return health

    def bind_metrics(self, metrics: Metrics) -> None:
        self._runs = metrics.code_runs
        self._wall = metrics.sandbox_run_seconds.labels(self.name)

    def _observe_wall(self, wall_s: float) -> None:
        if self._wall is not None:
            self._wall.observe(wall_s)

    def _count(self, verdict: str) -> None:
        if self._runs is not None:
            self._runs.labels(self.name, verdict).inc()

    def fingerprint_extra(self) -> dict[str, object]:
        toolchains = (
            {name: toolchain_version(lang) for name, lang in sorted(self.languages.items())}
            if self.opts.backend == "sandbox"
            else {}
        )
        return {"toolchains": toolchains}

    # -- scoring -----------------------------------------------------------------------
    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        return list(await asyncio.gather(*(self._score_item(item) for item in items)))

    async def _score_item(self, item: ScoreInput) -> ScoreResult:
        if deadline_passed():
            return past_deadline_result()
        try:
            suite = parse_tests(self._raw_tests(item), max_cases=self.opts.max_cases)
            name, language = self._language(item)
        except TestFormatError as exc:
            return ScoreResult.failed(str(exc), "invalid_reference")
        except LookupError as exc:
            return ScoreResult.failed(str(exc.args[0]), "invalid_input")
        total = len(suite.cases)
        code = extract_code(
            item.response, mode=self.opts.extract, tags=(name, *language.fence_tags),
            pattern=self._pattern,
        )  # fmt: skip
        if code is None:
            where = "the response" if self.opts.extract != "regex" else "extract_regex matches"
            return ScoreResult(
                value=self.opts.reward_no_code,
                aspects={"pass_rate": 0.0, "passed": 0.0, "total": float(total)},
                reason=f"no_code: no {name} code found in {where}",
            )
        if suite.kind == "call" and name != "python":
            return ScoreResult.failed("call-based tests (fn_name) need Python", "invalid_input")
        try:
            verdicts, failure = await self._run_suite(suite, code, name, language)
        except Exception as exc:  # a bug or a broken host: no verdict for this item
            log.exception("scorer %s: running item %s failed", self.name, item.id)
            return ScoreResult.failed(f"sandbox_error: {type(exc).__name__}: {exc}",
                                      "sandbox_error")  # fmt: skip
        if failure is not None:
            self._count(failure.failure_type)
            return ScoreResult.failed(failure.failure or "no verdict", failure.failure_type)
        return self._result(verdicts, total)

    def _raw_tests(self, item: ScoreInput) -> object:
        meta_tests = (item.metadata or {}).get("tests")
        source = self.opts.tests_from
        if source == "metadata" or (source == "auto" and meta_tests is not None):
            if meta_tests is None:
                raise TestFormatError("metadata.tests is missing")
            return meta_tests
        if item.reference is None:
            raise TestFormatError("no tests: set reference (a JSON string) or metadata.tests")
        return item.reference

    def _language(self, item: ScoreInput) -> tuple[str, Language]:
        name = (item.metadata or {}).get("language", self.opts.language)
        if not isinstance(name, str) or name.lower() not in self.languages:
            raise LookupError(
                f"unknown language {name!r}; this scorer runs {sorted(self.languages)}"
            )
        return name.lower(), self.languages[name.lower()]

    async def _run_suite(
        self, suite: TestSuite, code: str, name: str, language: Language
    ) -> tuple[list[tuple[str, str]], CaseRun | None]:
        """(verdict, detail) per case run, or the failure that left the item undecided."""
        verdicts: list[tuple[str, str]] = []
        fail_fast = self.opts.fail_fast
        if suite.kind == "assert":  # a program per case: the suffix is the test
            if not fail_fast:  # all at once (the backend bounds the runs in flight)
                all_runs = await asyncio.gather(*(
                    self.backend.execute(language, name, code + case.suffix, [""])
                    for case in suite.cases
                ))  # fmt: skip
                for runs in all_runs:
                    if runs[0].verdict is None:
                        return verdicts, runs[0]
                return [
                    self._judge(c, r[0], "") for c, r in zip(suite.cases, all_runs, strict=True)
                ], None
            for case in suite.cases:
                runs = await self.backend.execute(language, name, code + case.suffix, [""])
                if runs[0].verdict is None:
                    return verdicts, runs[0]
                verdicts.append(self._judge(case, runs[0], ""))
                if verdicts[-1][0] != "passed":
                    break
            return verdicts, None
        source = code
        stdins, markers = [], []
        for case in suite.cases:
            if case.call is not None:
                source = call_harness(code, case.call.fn_name)
                stdin, marker = call_stdin(case.stdin)
            else:
                stdin, marker = case.stdin, ""
            stdins.append(stdin)
            markers.append(marker)
        judged: dict[int, tuple[str, str]] = {}

        def stop_judged(index: int, run: CaseRun) -> bool:
            judged[index] = self._judge(suite.cases[index], run, markers[index])
            return run.verdict is None or judged[index][0] != "passed"

        runs = await self.backend.execute(
            language, name, source, stdins, stop=stop_judged if fail_fast else None
        )
        for index, run in enumerate(runs):
            if run.verdict is None:
                return verdicts, run
            if run.verdict == "compile_error":
                self._count("compile_error")
                return [("compile_error", run.detail)] * len(suite.cases), None
            verdicts.append(
                judged.get(index) or self._judge(suite.cases[index], run, markers[index])
            )
        return verdicts, None

    def _judge(self, case: Case, run: CaseRun, marker: str) -> tuple[str, str]:
        if run.verdict is None:
            return "failure", run.failure or ""
        if run.verdict != "ok":
            detail = run.detail or run.stderr.strip()[-300:]
            self._count(run.verdict)
            return run.verdict, detail
        if case.call is not None:
            found, value = parse_call_output(run.stdout, marker)
            tol = self.opts.float_tolerance if self.opts.compare == "float" else None
            ok = found and call_matches(value, case.call.expected, tol)
            verdict = "passed" if ok else "wrong_answer"
            detail = "" if ok else ("no return value" if not found else f"returned {value!r}"[:200])
        elif case.expected is not None:
            ok = outputs_match(run.stdout, case.expected, self.opts.compare,
                               self.opts.float_tolerance)  # fmt: skip
            verdict = "passed" if ok else "wrong_answer"
            detail = "" if ok else f"output {run.stdout[:120]!r}"
        else:
            verdict, detail = "passed", ""
        self._count(verdict)
        return verdict, detail

    def _result(self, verdicts: list[tuple[str, str]], total: int) -> ScoreResult:
        passed = sum(1 for v, _ in verdicts if v == "passed")
        rate = passed / total
        value = rate if self.opts.reward == "fraction" else float(passed == total)
        reason = f"passed {passed}/{total}"
        for index, (verdict, detail) in enumerate(verdicts):
            if verdict != "passed":
                reason = f"case {index}: {verdict}" + (f": {detail}" if detail else "")
                reason += f" (passed {passed}/{total})"
                break
        return ScoreResult(
            value=value,
            aspects={"pass_rate": rate, "passed": float(passed), "total": float(total)},
            reason=reason,
        )
