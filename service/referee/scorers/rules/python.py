"""``python``: a reward function of your own, named by import path in the server config.

``function: "package.module:attr"`` comes from the server config only, never from a
request. It is imported, and its signature checked against the fields and ``kwargs`` it
would get, when the options are validated (so ``referee validate`` finds a typo), and
again in ``setup()``. It is called with keyword arguments taken from the item —
``prompt``, ``response``, ``reference``, ``messages`` (a list of dicts), ``group``,
``metadata`` — only those its signature names (all of them if it takes ``**kwargs``),
plus the fixed ``kwargs`` of the config. ``id`` is passed only to a function that names
an ``id`` parameter, and then enters the cache key. ``reads`` narrows the item fields
passed (and the cache key): the function must not depend on anything else, or cached
rewards go stale.

It returns a number, a bool, or a dict with ``"reward"`` (a number), other numeric entries
(aspects) and an optional ``"reason"`` (str). Anything else, a non-finite number or an
exception is an error for that item alone. At most ``concurrency`` calls run at a time
across all batches: sync functions in a thread pool of that size owned by the scorer,
async ones on the event loop. A call without a result after ``timeout_s`` fails its item
with error type ``timeout``; the other items are unaffected. An async call is cancelled
then; a sync call cannot be (Python cannot kill a thread): it keeps its pool thread
until it returns, and while every thread is held so, further calls wait and time out.

Cached rewards are keyed on the function path, its own source text and ``version``:
bump ``version`` when something the function uses (a helper, a data file) changes.
See ``referee.examples.rewards`` for examples.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import math
import numbers
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field, FiniteFloat, field_validator, model_validator

from referee.scorers.base import (
    FIELDS,
    ScoreInput,
    Scorer,
    ScoreResult,
    ScorerOptions,
    deadline_passed,
    past_deadline_result,
)

__all__ = ["PythonScorer", "resolve_function"]

_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_ARGUMENTS = (*FIELDS, "id")


def resolve_function(path: str) -> Callable[..., Any]:
    """Import ``package.module:attr`` (``attr`` may be dotted) and check it is callable."""
    module_name, _, attr_path = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(target):
        raise TypeError(f"{path} is not callable")
    return target


def _fields_to_pass(
    fn: Callable[..., Any], reads: Sequence[str], kwargs: dict[str, Any]
) -> tuple[str, ...]:
    """The item fields to pass ``fn`` (``id`` only when it names it); raises TypeError
    when ``reads`` and the config's ``kwargs`` cannot fit its signature."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as exc:  # some builtins have no readable signature
        raise TypeError(f"cannot read its signature: {exc}") from None
    by_keyword = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    any_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters)
    offered = (*reads, "id") if "id" in by_keyword else tuple(reads)
    unexpected = [] if any_keyword else sorted(set(kwargs) - by_keyword)
    if unexpected:
        raise TypeError(f"takes no arguments {unexpected} (from `kwargs`)")
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        if p.kind is p.POSITIONAL_ONLY or not (p.name in offered or p.name in kwargs):
            raise TypeError(
                f"requires argument {p.name!r}, which is neither an item field passed by "
                f"keyword (reads: {list(reads)}) nor in `kwargs`"
            )
    return offered if any_keyword else tuple(f for f in offered if f in by_keyword)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an instance with `async def __call__`
    )


def to_result(value: object) -> ScoreResult:
    """A function's return value as a result, or an error saying what was wrong with it."""
    aspects: dict[str, float] = {}
    reason: str | None = None
    if isinstance(value, dict):
        if "reward" not in value:
            return ScoreResult.failed(f"returned a dict without 'reward' (keys: {sorted(value)})")
        for key, entry in value.items():
            if key == "reward":
                continue
            if key == "reason":
                if entry is not None and not isinstance(entry, str):
                    return ScoreResult.failed("'reason' must be a string")
                reason = entry
            elif isinstance(entry, numbers.Real) and math.isfinite(entry):
                aspects[str(key)] = float(entry)
            else:
                return ScoreResult.failed(f"entry {key!r} is {entry!r}; expected a finite number")
        value = value["reward"]
    if not isinstance(value, numbers.Real):
        return ScoreResult.failed(
            f"returned {type(value).__name__}; expected a number, a bool or a dict with 'reward'"
        )
    if not math.isfinite(value):
        return ScoreResult.failed(f"returned a non-finite reward: {value!r}")
    return ScoreResult(value=float(value), aspects=aspects, reason=reason)


class PythonScorer(Scorer):
    kind = "python"
    reads = FIELDS

    class Options(ScorerOptions):
        function: str
        """Import path ``package.module:attr`` of the reward function."""
        kwargs: dict[str, Any] = Field(default_factory=dict)
        """Fixed extra keyword arguments."""
        reads: tuple[str, ...] | None = None
        """The item fields the function depends on (default: all)."""
        version: str | None = None
        """Bump when the function's behaviour changes, so cached rewards miss."""
        concurrency: int = Field(default=16, ge=1, le=1024)
        """Calls in flight at once (sync functions: threads of the scorer's pool)."""
        timeout_s: FiniteFloat = Field(default=30.0, gt=0)
        """Deadline of one call; past it the item fails with error type ``timeout``."""

        @field_validator("function")
        @classmethod
        def _import_path(cls, value: str) -> str:
            if not _IMPORT_PATH.fullmatch(value):
                raise ValueError(
                    f"expected an import path like `package.module:function`: {value!r}"
                )
            return value

        @field_validator("kwargs")
        @classmethod
        def _no_item_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
            clash = sorted(set(value) & set(_ARGUMENTS))
            if clash:
                raise ValueError(f"must not set item fields, which come from each item: {clash}")
            return value

        @field_validator("reads")
        @classmethod
        def _known_fields(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
            if value is not None:
                unknown = sorted(set(value) - set(FIELDS))
                if unknown:
                    raise ValueError(f"unknown item fields {unknown}; known: {list(FIELDS)}")
                value = tuple(f for f in FIELDS if f in value)  # canonical order, no repeats
            return value

        @model_validator(mode="after")
        def _function_fits(self) -> PythonScorer.Options:
            try:
                _fields_to_pass(resolve_function(self.function), self.item_fields(), self.kwargs)
            except (ImportError, TypeError) as exc:
                raise ValueError(f"function {self.function}: {exc}") from None
            except Exception as exc:  # importing runs the module's code: anything may fail
                raise ValueError(
                    f"function {self.function}: importing failed: {type(exc).__name__}: {exc}"
                ) from None
            return self

        def item_fields(self) -> tuple[str, ...]:
            return self.reads if self.reads is not None else FIELDS

    def __init__(self, name: str, options: ScorerOptions) -> None:
        if not isinstance(options, PythonScorer.Options):
            raise TypeError(f"{type(self).__name__} needs {type(self).__name__}.Options")
        super().__init__(name, options)
        self.opts = options
        self._function: Callable[..., Any] | None = None
        self._passed: tuple[str, ...] | None = None
        self._source_sha256: str | None = None
        self._limit: asyncio.Semaphore | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _passed_fields(self) -> tuple[str, ...]:
        if self._passed is None:
            fn = resolve_function(self.opts.function)
            self._passed = _fields_to_pass(fn, self.opts.item_fields(), self.opts.kwargs)
        return self._passed

    def cache_fields(self) -> tuple[str, ...]:
        fields = self.opts.item_fields()
        return (*fields, "id") if "id" in self._passed_fields() else fields

    async def setup(self) -> None:
        fn = resolve_function(self.opts.function)
        try:
            self._passed = _fields_to_pass(fn, self.opts.item_fields(), self.opts.kwargs)
        except TypeError as exc:
            raise TypeError(f"function {self.opts.function}: {exc}") from None
        if not _is_async(fn) and self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.opts.concurrency, thread_name_prefix=f"referee-{self.name}"
            )
        self._function = fn

    async def close(self) -> None:
        self._function = None
        if self._executor is not None:
            # A call still running (past its timeout) cannot be stopped: do not wait for it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def health(self) -> dict[str, object]:
        return {"ready": self._function is not None}

    def fingerprint_extra(self) -> dict[str, object]:
        if self._source_sha256 is None:
            try:
                source = inspect.getsource(resolve_function(self.opts.function))
            except (OSError, TypeError):  # no source to read (a builtin, a C extension)
                source = ""
            self._source_sha256 = hashlib.sha256(source.encode()).hexdigest()
        return {
            "function": self.opts.function,
            "version": self.opts.version,
            "source_sha256": self._source_sha256,
        }

    def _arguments(self, item: ScoreInput) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        for name in self._passed_fields():
            value = getattr(item, name)
            if name == "messages" and value is not None:
                value = [dict(m) for m in value]
            elif name == "metadata" and value is not None:
                value = dict(value)
            arguments[name] = value
        return {**arguments, **self.opts.kwargs}

    def _call_sync(self, fn: Callable[..., Any], item: ScoreInput) -> ScoreResult:
        try:
            value = fn(**self._arguments(item))
            if inspect.iscoroutine(value):
                value.close()
                raise TypeError("returned a coroutine; declare the function `async def`")
            return to_result(value)
        except Exception as exc:  # the user's function failed for this item only
            return ScoreResult.failed(f"{type(exc).__name__}: {exc}")

    async def _call_async(self, fn: Callable[..., Any], item: ScoreInput) -> ScoreResult:
        try:
            return to_result(await fn(**self._arguments(item)))
        except Exception as exc:  # the user's function failed for this item only
            return ScoreResult.failed(f"{type(exc).__name__}: {exc}")

    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        fn = self._function
        if fn is None:
            raise RuntimeError(f"scorer {self.name!r}: setup() has not run")
        if self._limit is None:  # one bound for all the batches in flight
            self._limit = asyncio.Semaphore(self.opts.concurrency)
        limit, executor, timeout = self._limit, self._executor, self.opts.timeout_s
        loop = asyncio.get_running_loop()

        async def one(item: ScoreInput) -> ScoreResult:
            # Under `limit`, a sync call finds a free pool thread (unless earlier calls
            # hang past their timeout), so the deadline counts its run, not a queue.
            async with limit:
                if deadline_passed():
                    return past_deadline_result()
                call = (
                    self._call_async(fn, item)
                    if executor is None
                    else loop.run_in_executor(executor, self._call_sync, fn, item)
                )
                try:
                    # The calls catch the function's own exceptions (its own TimeoutError
                    # included), so a TimeoutError here is the deadline's.
                    return await asyncio.wait_for(call, timeout)
                except asyncio.TimeoutError:
                    return ScoreResult.failed(
                        f"no result within timeout_s ({timeout:g}s)", error_type="timeout"
                    )

        return list(await asyncio.gather(*(one(item) for item in items)))
