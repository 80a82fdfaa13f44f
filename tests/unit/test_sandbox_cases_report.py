"""How the server reads the launcher's report of several cases run in one sandbox: each
case's outcome in order, and nothing past the first case not reported whole (those cases
then run in sandboxes of their own). The launcher itself is tested in a real sandbox in
tests/integration/test_code_sandbox.py."""

from __future__ import annotations

import signal

from referee.scorers.execution.sandbox import Limits, _parse_cases

LIMITS = Limits(cpu_s=2, wall_s=5, output_bytes=10)


def case(index: int, kind: str, code: int, out: bytes = b"", err: bytes = b"",
         cpu_us: int = 0, wait_us: int = 0, procs: int = 1, cpus: int = 2) -> bytes:  # fmt: skip
    header = (f"case {index} {kind} {code} {cpu_us} {wait_us} 12000 {procs} {cpus} "
              f"{len(out)} {len(err)}\n")  # fmt: skip
    return header.encode() + out + err


def test_every_kind_of_end_becomes_its_outcome() -> None:
    report = b"".join([
        case(0, "exit", 0, b"3\n"),
        case(1, "exit", 1, b"", b"Traceback\n"),
        case(2, "signal", signal.SIGSEGV),
        case(3, "signal", signal.SIGXCPU),
        case(4, "output", 0, b"x" * 10),
        case(5, "wall", 0, b"partial", cpu_us=300_000, wait_us=100_000),
        case(6, "wall", 0, cpu_us=200_000, wait_us=3_000_000),
        # the same wait, but among more processes than the CPUs they could run on: the
        # program may have crowded itself, so it gets its verdict
        case(7, "wall", 0, cpu_us=200_000, wait_us=3_000_000, procs=3, cpus=2),
    ])  # fmt: skip
    outcomes = _parse_cases(report, 8, LIMITS)
    assert [o.status for o in outcomes] == [
        "finished", "finished", "signalled", "time_limit", "output_limit", "time_limit",
        "overloaded", "time_limit",
    ]  # fmt: skip
    assert outcomes[0].stdout == b"3\n" and outcomes[0].exit_code == 0
    assert outcomes[1].exit_code == 1 and outcomes[1].stderr == b"Traceback\n"
    assert outcomes[2].signal == signal.SIGSEGV
    assert outcomes[5].stdout == b"partial" and "wall-clock" in outcomes[5].detail
    assert "overloaded" in outcomes[6].detail  # starved of CPU: no verdict
    assert outcomes[0].wall_s == 0.012


def test_the_report_stops_at_the_first_case_not_reported_whole() -> None:
    whole = case(0, "exit", 0, b"3\n")
    assert len(_parse_cases(whole + case(1, "exit", 0, b"7\n")[:-1], 3, LIMITS)) == 1
    assert len(_parse_cases(whole + b"case 1 exit 0 0 0", 3, LIMITS)) == 1  # no newline
    assert len(_parse_cases(whole + case(2, "exit", 0), 3, LIMITS)) == 1  # skipped index
    assert len(_parse_cases(whole + b"wiped-not 1\n", 3, LIMITS)) == 1
    assert len(_parse_cases(whole + b"changed 1\n", 3, LIMITS)) == 1
    assert len(_parse_cases(whole + case(1, "error", 0), 3, LIMITS)) == 1
    assert len(_parse_cases(whole + b"case 1 exit x 0 0 0 0 0 0 0\n", 3, LIMITS)) == 1
    assert len(_parse_cases(whole + b"case 1 exit 0 0 0 0 0 0\n", 3, LIMITS)) == 1  # old form
    assert len(_parse_cases(whole + case(1, "exit", 0) + case(2, "exit", 0), 2, LIMITS)) == 2
    assert _parse_cases(b"", 2, LIMITS) == []
