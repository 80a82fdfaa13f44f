"""What the code scorer runs and how it judges the output: code extraction, the test
formats it reads, and output comparison. Pure functions, no sandbox.

Test formats (a JSON object, from ``reference`` as verl's ``ground_truth`` or from
``metadata.tests``):

- stdin/stdout: ``{"inputs": [...], "outputs": [...]}`` (APPS, TACO, CodeContests,
  LiveCodeBench); an entry that is a list of lines is joined with newlines;
- call-based: the same plus ``"fn_name"``: each input is the argument list of one call of
  ``fn_name`` (a function, or a method of class ``Solution``), each output the expected
  return value (APPS/TACO: a one-element list holding it also matches); Python only;
- assertion program: ``{"test": "...", "entry_point": "f"}`` (HumanEval: the test defines
  ``check(candidate)``, called with ``entry_point``) or ``{"test_list": ["assert ..."],
  "test_setup_code": "..."}`` (MBPP: one case per assertion); a case passes when the
  program (solution + test) exits 0.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CallCheck",
    "Case",
    "TestFormatError",
    "TestSuite",
    "call_harness",
    "call_matches",
    "call_stdin",
    "extract_code",
    "outputs_match",
    "parse_call_output",
    "parse_tests",
]

_FENCE = re.compile(r"^[ \t]*```[ \t]*([^\s`]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)


class TestFormatError(ValueError):
    """The tests cannot be read; the message says what is wrong."""

    __test__ = False  # not a pytest class


def extract_code(
    text: str,
    *,
    mode: Literal["last_block", "first_block", "whole", "regex"],
    tags: tuple[str, ...],
    pattern: re.Pattern[str] | None = None,
) -> str | None:
    """The program in a response, or None. Blocks tagged with one of ``tags`` win over
    untagged blocks; blocks tagged with another language are never taken. ``<think>``
    sections are ignored."""
    text = _THINK.sub("", text)
    if mode == "whole":
        return text if text.strip() else None
    if mode == "regex":
        assert pattern is not None
        found = pattern.findall(text)
        if not found:
            return None
        last = found[-1]
        code = last if isinstance(last, str) else last[0]
        return code if code.strip() else None
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    tagged = [code for tag, code in blocks if tag in tags]
    chosen = tagged or [code for tag, code in blocks if tag == ""]
    chosen = [c for c in chosen if c.strip()]
    if not chosen:
        return None
    return chosen[-1] if mode == "last_block" else chosen[0]


@dataclass(frozen=True, slots=True)
class CallCheck:
    """A call-based case: the arguments go in on stdin; the expected return value."""

    fn_name: str
    expected: Any


@dataclass(frozen=True, slots=True)
class Case:
    """One run: ``stdin``; ``expected`` stdout (None: pass on exit 0); ``suffix``: test
    code appended to the solution (assertion programs); ``call``: a call-based check."""

    stdin: str = ""
    expected: str | None = None
    suffix: str = ""
    call: CallCheck | None = None


@dataclass(frozen=True, slots=True)
class TestSuite:
    kind: Literal["stdio", "call", "assert"]
    cases: tuple[Case, ...]

    __test__ = False  # not a pytest class


def _text(value: object, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TestFormatError(
        f"{what} must be a string (or a list of lines), not {type(value).__name__}"
    )


def parse_tests(raw: object, *, max_cases: int) -> TestSuite:
    """The test suite in ``raw`` (a JSON string or an already-decoded object)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TestFormatError(f"tests are not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TestFormatError(
            'tests must be a JSON object ({"inputs": [...], "outputs": [...]}, '
            '{"test": ..., "entry_point": ...} or {"test_list": [...]})'
        )
    if "inputs" in raw or "outputs" in raw:
        return _io_tests(raw, max_cases)
    if "test_list" in raw:
        asserts = raw["test_list"]
        if not isinstance(asserts, list) or not all(isinstance(a, str) for a in asserts):
            raise TestFormatError("test_list must be a list of strings (assertions)")
        setup = raw.get("test_setup_code") or ""
        if not isinstance(setup, str):
            raise TestFormatError("test_setup_code must be a string")
        cases = tuple(Case(suffix=f"\n\n{setup}\n{a}\n") for a in asserts)
        return _bounded(TestSuite("assert", cases), max_cases)
    if "test" in raw:
        test, entry = raw["test"], raw.get("entry_point")
        if not isinstance(test, str) or not (entry is None or isinstance(entry, str)):
            raise TestFormatError("test must be a string and entry_point a string")
        if entry is not None and not entry.isidentifier():
            raise TestFormatError(f"entry_point {entry!r} is not a Python identifier")
        call = f"\ncheck({entry})\n" if entry else "\n"
        return TestSuite("assert", (Case(suffix=f"\n\n{test}\n{call}"),))
    raise TestFormatError(
        f"unknown test format (keys: {sorted(raw)[:10]}); expected inputs/outputs "
        "(+ fn_name), test (+ entry_point) or test_list"
    )


def _io_tests(raw: dict[str, Any], max_cases: int) -> TestSuite:
    inputs, outputs = raw.get("inputs"), raw.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise TestFormatError("inputs and outputs must both be lists")
    if len(inputs) != len(outputs):
        raise TestFormatError(f"{len(inputs)} inputs but {len(outputs)} outputs")
    fn_name = raw.get("fn_name")
    if fn_name is not None:
        if not isinstance(fn_name, str) or not fn_name.isidentifier():
            raise TestFormatError(f"fn_name {fn_name!r} is not a Python identifier")
        cases = []
        for i, (args, expected) in enumerate(zip(inputs, outputs, strict=True)):
            if isinstance(args, str):  # LiveCodeBench: one JSON value per line
                try:
                    args = [json.loads(line) for line in args.splitlines() if line.strip()]
                except json.JSONDecodeError as exc:
                    raise TestFormatError(f"inputs[{i}]: {exc}") from None
            if not isinstance(args, list):
                raise TestFormatError(f"inputs[{i}] must be the list of call arguments")
            cases.append(Case(stdin=json.dumps(args), call=CallCheck(fn_name, expected)))
        return _bounded(TestSuite("call", tuple(cases)), max_cases)
    cases = [
        Case(stdin=_text(i, f"inputs[{n}]"), expected=_text(o, f"outputs[{n}]"))
        for n, (i, o) in enumerate(zip(inputs, outputs, strict=True))
    ]
    return _bounded(TestSuite("stdio", tuple(cases)), max_cases)


def _bounded(suite: TestSuite, max_cases: int) -> TestSuite:
    if not suite.cases:
        raise TestFormatError("the tests hold no case")
    if len(suite.cases) > max_cases:
        raise TestFormatError(f"{len(suite.cases)} test cases; at most max_cases={max_cases}")
    return suite


# -- comparison ---------------------------------------------------------------------------
def _lines(text: str) -> list[list[str]]:
    rows = [line.split() for line in text.replace("\r\n", "\n").split("\n")]
    while rows and not rows[-1]:
        rows.pop()
    return rows


def _same_token(a: str, b: str, tol: float) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return False
    return math.isclose(x, y, rel_tol=tol, abs_tol=tol)


def outputs_match(
    actual: str, expected: str, mode: Literal["exact", "lines", "float"], tol: float
) -> bool:
    """exact: byte for byte; lines: the same whitespace-separated tokens on each line,
    trailing blank lines ignored; float: as lines, numbers equal within ``tol``."""
    if mode == "exact":
        return actual == expected
    got, want = _lines(actual), _lines(expected)
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if len(g) != len(w):
            return False
        if mode == "lines":
            if g != w:
                return False
        elif not all(_same_token(a, b, tol) for a, b in zip(g, w, strict=True)):
            return False
    return True


def _values_equal(a: Any, b: Any, tol: float | None) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if isinstance(a, int | float) and isinstance(b, int | float):
        if tol is None:
            return a == b
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_values_equal(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_values_equal(a[k], b[k], tol) for k in a)
    return bool(a == b)


def call_matches(actual: Any, expected: Any, tol: float | None) -> bool:
    """The return value equals the expected one, or (APPS/TACO) the one value the
    expected list holds."""
    if _values_equal(actual, expected, tol):
        return True
    return (
        isinstance(expected, list)
        and len(expected) == 1
        and _values_equal(actual, expected[0], tol)
    )


# -- call-based harness -------------------------------------------------------------------
_HARNESS = """\
import json as _j, sys as _s
_rf_in = _j.loads(_s.stdin.readline())
_rf_marker, _rf_args = _rf_in["marker"], _rf_in["args"]
del _rf_in
_rf_ns = {"__name__": "__solution__"}
exec(compile(%(source)r, "solution.py", "exec"), _rf_ns)
_rf_fn = _rf_ns.get(%(fn)r)
if _rf_fn is None and "Solution" in _rf_ns:
    _rf_fn = getattr(_rf_ns["Solution"](), %(fn)r, None)
if _rf_fn is None:
    raise SystemExit("the solution defines no function " + %(fn)r)
_rf_out = _rf_fn(*_rf_args)
if isinstance(_rf_out, tuple):
    _rf_out = list(_rf_out)
_s.stdout.write("\\n" + _rf_marker + _j.dumps(_rf_out) + "\\n")
"""


def call_harness(source: str, fn_name: str) -> str:
    """A Python program that reads ``{"marker", "args"}`` from its first stdin line,
    runs the solution, calls ``fn_name(*args)`` and prints the marker and the JSON of
    the result on its last line. The marker is random per run, so the solution cannot
    print a result of its own."""
    return _HARNESS % {"source": source, "fn": fn_name}


def call_stdin(args_json: str) -> tuple[str, str]:
    """(stdin for the harness, the marker its result line starts with)."""
    marker = f"@@referee-result-{secrets.token_hex(8)}@@"
    return json.dumps({"marker": marker, "args": json.loads(args_json)}) + "\n", marker


def parse_call_output(stdout: str, marker: str) -> tuple[bool, Any]:
    """(found, value) from the harness's result line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker):
            try:
                return True, json.loads(line[len(marker) :])
            except json.JSONDecodeError:
                return False, None
    return False, None
