"""``backend: sandbox_fusion``: run programs on a SandboxFusion service you already run.

Each test case is one ``POST {endpoint}/run_code`` with SandboxFusion's documented
request (``code``, ``language``, ``stdin``, ``compile_timeout``, ``run_timeout``,
``memory_limit_MB``; ``files: {}``, ``fetch_files: []``), at most ``max_concurrency`` in
flight. Its answer (``status``: Success / Failed / SandboxError, with ``compile_result``
and ``run_result``, each ``{status: Finished | TimeLimitExceeded | Error, return_code,
stdout, stderr, execution_time}``) becomes a run verdict. Connection errors, timeouts and
5xx answers are retried (``retries``, exponential backoff); when the service stays down,
or answers SandboxError, the item fails (``sandbox_unavailable`` / ``sandbox_error``)
with no reward.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from referee.scorers.execution.backends import CaseRun
from referee.scorers.execution.languages import Language
from referee.scorers.execution.sandbox import Limits

__all__ = ["SandboxFusionBackend"]

_MEMORY_SIGNS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory")


class _Unavailable(Exception):
    pass


class SandboxFusionBackend:
    def __init__(
        self, endpoint: str, *, limits: Limits, compile_limits: Limits, max_concurrency: int,
        timeout_s: float, retries: int,
    ) -> None:  # fmt: skip
        self.url = endpoint.rstrip("/").removesuffix("/run_code") + "/run_code"
        self.limits = limits
        self.compile_limits = compile_limits
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s + self.limits.wall_s + self.compile_limits.wall_s),
            limits=httpx.Limits(max_connections=self.max_concurrency),
        )
        self._slots = asyncio.Semaphore(self.max_concurrency)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def health(self) -> dict[str, object]:
        return {
            "ready": self._client is not None,
            "backend": "sandbox_fusion",
            "endpoint": self.url,
        }

    async def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self._client is not None and self._slots is not None
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(4.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random()))
            try:
                async with self._slots:
                    response = await self._client.post(self.url, json=payload)
            except httpx.TransportError as exc:  # connection refused, reset, timeout
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code >= 500 or response.status_code in (408, 429):
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise _Unavailable(f"SandboxFusion refused the request: HTTP "
                                   f"{response.status_code}: {response.text[:300]}")  # fmt: skip
            try:
                body = response.json()
            except ValueError:
                last = "an answer that is not JSON"
                continue
            if not isinstance(body, dict):
                last = "an answer that is not a JSON object"
                continue
            return body
        raise _Unavailable(f"SandboxFusion at {self.url} unavailable after "
                           f"{self.retries + 1} tries: {last}")  # fmt: skip

    async def _one(self, language: Language, name: str, source: str, stdin: str) -> CaseRun:
        payload = {
            "code": source,
            "language": language.sandbox_fusion or name,
            "stdin": stdin,
            "compile_timeout": self.compile_limits.cpu_s,
            "run_timeout": self.limits.cpu_s,
            "memory_limit_MB": self.limits.memory_mb,
            "files": {},
            "fetch_files": [],
        }
        try:
            body = await self._post(payload)
        except _Unavailable as exc:
            return CaseRun(None, failure=str(exc), failure_type="sandbox_unavailable")
        return self._verdict(body)

    def _verdict(self, body: dict[str, Any]) -> CaseRun:
        status = body.get("status")
        compiled = body.get("compile_result") or None
        ran = body.get("run_result") or None
        if status == "SandboxError":
            message = str(body.get("message") or "")[:500]
            return CaseRun(None, failure=f"SandboxFusion: SandboxError: {message}",
                           failure_type="sandbox_error")  # fmt: skip
        if isinstance(compiled, dict) and (
            compiled.get("status") != "Finished" or compiled.get("return_code") not in (0, None)
        ):
            err = str(compiled.get("stderr") or compiled.get("status") or "")
            return CaseRun("compile_error", stderr=err[-2000:], detail=err.strip()[-1500:])
        if not isinstance(ran, dict):
            return CaseRun(None, failure=f"SandboxFusion answered {status!r} without a "
                           "run_result", failure_type="sandbox_error")  # fmt: skip
        out, err = str(ran.get("stdout") or ""), str(ran.get("stderr") or "")
        wall = float(ran.get("execution_time") or 0.0)
        run_status, code = ran.get("status"), ran.get("return_code")
        if len(out.encode()) > self.limits.output_bytes:
            cap = self.limits.output_bytes
            return CaseRun("output_limit", out[:cap], err[-2000:],
                           f"more than {cap} bytes of output", wall)  # fmt: skip
        if run_status == "TimeLimitExceeded":
            return CaseRun("time_limit", out, err[-2000:], "run_timeout", wall)
        if run_status != "Finished":
            return CaseRun(None, failure=f"SandboxFusion run status {run_status!r}",
                           failure_type="sandbox_error")  # fmt: skip
        if code != 0:
            if any(sign in err for sign in _MEMORY_SIGNS):
                return CaseRun("memory_limit", out, err[-2000:], "memory limit", wall)
            return CaseRun("runtime_error", out, err[-2000:], f"exit code {code}", wall)
        return CaseRun("ok", out, err[-2000:], "", wall)

    async def execute(
        self, language: Language, language_name: str, source: str, stdins: Sequence[str],
        stop: Callable[[int, CaseRun], bool] | None = None,
    ) -> list[CaseRun]:  # fmt: skip
        if self._client is None:
            raise RuntimeError("the SandboxFusion backend is not started")
        if stop is None:
            runs = await asyncio.gather(
                *(self._one(language, language_name, source, s) for s in stdins)
            )
            return self._compile_once(list(runs))
        out: list[CaseRun] = []
        for index, stdin in enumerate(stdins):
            out.append(await self._one(language, language_name, source, stdin))
            if out[-1].verdict == "compile_error" or stop(index, out[-1]):
                break
        return self._compile_once(out)

    @staticmethod
    def _compile_once(runs: list[CaseRun]) -> list[CaseRun]:
        """A compile error (the service compiles per request) or a failure stands for
        every case, as with the local backend."""
        for run in runs:
            if run.verdict is None:
                return [run]
        for run in runs:
            if run.verdict == "compile_error":
                return [run]
        return runs
