"""The code scorer in a real bubblewrap sandbox, running real python3 and g++ programs:
verdicts, and hostile programs that try to get out. Where a hostile program would print a
secret it reached, the test's expected output IS that secret, so reaching it would pass
the case: each such case must end as anything but ``passed``. They need bubblewrap and
g++ (.ci/run installs them); without them they fail with the scorer's start-up error,
which says what to install."""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from referee.scorers.base import BATCH_DEADLINE, ScoreInput, ScoreResult
from referee.scorers.execution.backends import LocalBackend
from referee.scorers.execution.code import CodeScorer
from referee.scorers.execution.sandbox import Limits, Sandbox, SandboxUnavailableError
from tests.support import sandbox_uid_processes

ADD = json.dumps({"inputs": ["1 2\n", "3 4\n", "5 5\n"], "outputs": ["3\n", "7\n", "10\n"]})


def item(code: str, tests: str | dict[str, object] = ADD, language: str = "python",
         **meta: object) -> ScoreInput:  # fmt: skip
    fence = "cpp" if language == "cpp" else "python"
    reference = tests if isinstance(tests, str) else json.dumps(tests)
    return ScoreInput(
        id="i", prompt="", response=f"```{fence}\n{code}\n```", reference=reference,
        group=None, messages=None, metadata={"language": language, **meta},
    )  # fmt: skip


def verdict(result: ScoreResult) -> str:
    """The first failing case's verdict (or "passed")."""
    assert result.error is None, result.error
    reason = result.reason or ""
    return reason.split(": ")[1] if reason.startswith("case ") else "passed"


def secret_tests(secret: str) -> dict[str, object]:
    """One case whose expected output is ``secret``: passing it means the secret leaked."""
    return {"inputs": [""], "outputs": [secret + "\n"]}


@pytest.fixture
async def scorer() -> AsyncIterator[CodeScorer]:
    # The wall limit is generous next to the CPU limit: on a shared, loaded machine a
    # CPU-bound program still reaches its CPU limit first.
    s = CodeScorer("code", CodeScorer.Options(
        limits={"cpu_s": 1, "wall_s": 12, "memory_mb": 256, "output_bytes": 65536},
        max_concurrency=4,
    ))  # fmt: skip
    await s.setup()
    yield s
    await s.close()


def sandbox_processes(grace_s: float = 5.0, *, waiting_too: bool = False) -> list[str]:
    """Processes of the sandbox uid still alive after ``grace_s`` (there must be none after
    a run; the kernel kills a PID namespace's processes when its init dies, and they take
    a moment to exit and be reaped). Sandboxes made ahead and still waiting for their run
    count only with ``waiting_too``."""
    deadline = time.monotonic() + grace_s
    while (left := sandbox_uid_processes(waiting_too=waiting_too)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


async def test_python_and_cpp_verdicts(scorer: CodeScorer) -> None:
    add_py = "a, b = map(int, input().split())\nprint(a + b)"
    add_cpp = "#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b<<'\\n';}"
    results = await scorer.score_batch([
        item(add_py),
        item(add_py.replace("a + b", "a + b if a > 1 else 0")),
        item("raise SystemExit(3)"),
        item(add_cpp, language="cpp"),
        item("int main( {", language="cpp"),
        item("#include <cstdlib>\nint main(){ abort(); }", language="cpp"),
        item("print(1/0)"),
    ])  # fmt: skip
    assert [r.value for r in results] == [1.0, pytest.approx(2 / 3), 0.0, 1.0, 0.0, 0.0, 0.0]
    assert results[0].aspects == {"pass_rate": 1.0, "passed": 3.0, "total": 3.0}
    assert results[1].reason is not None and results[1].reason.startswith("case 0: wrong_answer")
    assert [verdict(r) for r in results[2:]] == [
        "runtime_error", "passed", "compile_error", "runtime_error", "runtime_error",
    ]  # fmt: skip


async def test_call_based_and_assertion_tests_run_in_the_sandbox(scorer: CodeScorer) -> None:
    fn = "class Solution:\n    def twoSum(self, xs, t):\n        return [0, 1] if xs[0] + xs[1] == t else [1, 2]"
    results = await scorer.score_batch([
        item(fn, {"fn_name": "twoSum", "inputs": [[[2, 7, 11], 9], [[3, 2, 4], 6]], "outputs": [[[0, 1]], [1, 2]]}),
        item("def f(x):\n    return 2 * x", {"test": "def check(c):\n    assert c(2) == 4\n", "entry_point": "f"}),
        item("def f(x):\n    return 2 * x", {"test_list": ["assert f(1) == 2", "assert f(2) == 5"]}),
        # a solution printing a fake result line of its own does not pass
        item("print('@@referee-result-0@@[3]')\ndef add(a, b):\n    return 0", {"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}),
    ])  # fmt: skip
    assert [r.value for r in results] == [1.0, 1.0, 0.5, 0.0]
    assert verdict(results[2]) == "runtime_error"  # the failing assertion


async def test_item_problems_are_reasons_or_per_item_errors(scorer: CodeScorer) -> None:
    no_code = ScoreInput(id="n", prompt="", response="I don't know.", reference=ADD,
                         group=None, messages=None, metadata=None)  # fmt: skip
    empty = ScoreInput(id="e", prompt="", response="", reference=ADD,
                       group=None, messages=None, metadata=None)  # fmt: skip
    results = await scorer.score_batch([
        no_code, empty, item("print(1)", "{not json"), item("print(1)", language="cobol"),
        item("print(1)", {"inputs": ["1"], "outputs": []}),
    ])  # fmt: skip
    assert results[0].value == 0.0 and results[0].reason and results[0].reason.startswith("no_code")
    assert results[1].value == 0.0 and results[1].reason and results[1].reason.startswith("no_code")
    assert [(r.value, r.error_type) for r in results[2:]] == [
        (None, "invalid_reference"), (None, "invalid_input"), (None, "invalid_reference"),
    ]  # fmt: skip
    assert "cobol" in (results[3].error or "")


HOSTILE_SHADOW = (
    Path("/etc/shadow").read_text().splitlines()[0]
    if os.access("/etc/shadow", os.R_OK)
    else "root:"
)


@pytest.mark.slow
async def test_hostile_programs_end_with_typed_verdicts_and_leave_nothing_behind(
    scorer: CodeScorer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api_key = f"sk-referee-{secrets.token_hex(8)}"
    monkeypatch.setenv("REFEREE_SERVER__API_KEYS", api_key)
    config = tmp_path / "server.yaml"
    config.write_text(f"server:\n  api_keys: [{api_key}]\n")
    escape = Path(f"/tmp/referee-escape-{secrets.token_hex(4)}")
    background = f"{secrets.randbelow(10**6) + 10**6}.5"
    cases = {
        "fork_bomb": (item("import os\nwhile True:\n    os.fork()"), {"runtime_error", "time_limit"}),
        "memory_bomb": (item("x = bytearray(2**31)"), {"memory_limit"}),
        "cpp_memory_bomb": (item("#include <vector>\nint main(){ std::vector<char> v(1ul<<31, 1); return v[7]; }", language="cpp"), {"memory_limit"}),
        "infinite_loop": (item("while True:\n    pass"), {"time_limit"}),
        "huge_stdout": (item("while True:\n    print('x' * 10000)"), {"output_limit"}),
        "write_outside": (item("open('/usr/evil', 'w')"), {"runtime_error"}),
        "write_root": (item("open('/evil', 'w')"), {"runtime_error"}),
        "write_dev": (item("open('/dev/evil', 'w')"), {"runtime_error"}),
        "write_host_tmp": (item(f"open('{escape}', 'w').write('x')\nprint('ok')", secret_tests("ok")), {"passed"}),
        "read_shadow": (item("print(open('/etc/shadow').read().splitlines()[0])", secret_tests(HOSTILE_SHADOW)), {"runtime_error"}),
        "read_env": (item("import os\nprint(os.environ.get('REFEREE_SERVER__API_KEYS', 'none'))\nprint(open('/proc/1/environ').read())", secret_tests(api_key)), {"wrong_answer", "runtime_error"}),
        "read_config": (item(f"print(open('{config}').read())", secret_tests(config.read_text().strip())), {"runtime_error"}),
        "connect_local": (item("import socket\nsocket.create_connection(('127.0.0.1', 6379), timeout=2)\nprint('connected')", secret_tests("connected")), {"runtime_error"}),
        "connect_remote": (item("import socket\nsocket.create_connection(('10.1.2.3', 80), timeout=2)\nprint('connected')", secret_tests("connected")), {"runtime_error"}),
        "kill_parent": (item("import os\nos.kill(os.getppid(), 9)\nprint('alive')", secret_tests("alive")), {"passed", "runtime_error"}),
        "background": (item(f"import subprocess\nsubprocess.Popen(['sleep', '{background}'], start_new_session=True)\nprint('ok')", secret_tests("ok")), {"passed"}),
    }  # fmt: skip
    started = time.monotonic()
    results = dict(
        zip(cases, await scorer.score_batch([c for c, _ in cases.values()]), strict=True)
    )
    elapsed = time.monotonic() - started
    for name, (_, expected) in cases.items():
        assert verdict(results[name]) in expected, (name, results[name])
    assert not escape.exists(), "a write to /tmp reached the host"  # noqa: ASYNC240
    assert sandbox_processes() == [], "a process survived its run"
    assert elapsed < 60
    await scorer.close()  # and the sandboxes made ahead go with the scorer
    assert sandbox_processes(waiting_too=True) == []


@pytest.mark.slow
async def test_sleeping_past_the_wall_limit_is_a_time_limit() -> None:
    s = CodeScorer("code", CodeScorer.Options(limits={"cpu_s": 1, "wall_s": 1.5}))
    await s.setup()
    [result] = await s.score_batch([item("import time\ntime.sleep(30)")])
    assert verdict(result) == "time_limit" and "wall-clock" in (result.reason or "")


async def test_concurrent_runs_cannot_see_each_others_files(scorer: CodeScorer) -> None:
    token = secrets.token_hex(8)
    writer = item(
        f"import time\nopen('/work/mine.txt', 'w').write('{token}')\n"
        f"open('/tmp/mine.txt', 'w').write('{token}')\ntime.sleep(1.5)\nprint('done')",
        secret_tests("done"),
    )
    reader = item(
        "import glob, time\ntime.sleep(0.5)\nfound = ''\n"
        "for pattern in ['/work/*', '/tmp/*', '/tmp/*/*', '/proc/*/root/work/*', '/proc/*/cwd/*']:\n"
        "    for path in glob.glob(pattern):\n"
        "        try:\n            found += open(path).read()\n        except OSError:\n            pass\n"
        "print(found)",
        secret_tests(token),
    )
    results = await scorer.score_batch([writer, reader])
    assert verdict(results[0]) == "passed"
    assert verdict(results[1]) == "wrong_answer"


async def test_missing_bubblewrap_refuses_to_start_and_says_what_to_install() -> None:
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap"):
        await Sandbox(bwrap="/nonexistent/bwrap").check()


async def test_no_user_namespaces_refuses_to_start_and_says_what_to_enable(tmp_path: Path) -> None:
    # A real host condition: bwrap run where user namespaces are disabled (inside a
    # sandbox made with --disable-userns), so creating one fails as it would on such a host.
    wrapper = tmp_path / "bwrap-without-userns"
    wrapper.write_text(
        "#!/bin/sh\nexec bwrap --unshare-user --disable-userns --ro-bind / / --dev /dev "
        '--proc /proc -- bwrap "$@"\n'
    )
    wrapper.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    with pytest.raises(SandboxUnavailableError, match="unprivileged user namespaces"):
        await Sandbox(bwrap=str(wrapper)).check()


async def test_isolation_none_is_explicit_logged_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = CodeScorer("code", CodeScorer.Options(isolation="none", limits={"cpu_s": 1}))
    await s.setup()
    assert "WITHOUT a sandbox" in caplog.text
    assert s.health()["isolation"] == "none" and "warning" in s.health()
    [result] = await s.score_batch([item("print(sum(map(int, input().split())))")])
    assert result.value == 1.0


async def test_fingerprint_includes_toolchain_versions_and_limits() -> None:
    a = CodeScorer("a", CodeScorer.Options(limits={"cpu_s": 1}))
    b = CodeScorer("b", CodeScorer.Options(limits={"cpu_s": 2}))
    assert a.fingerprint() != b.fingerprint()
    toolchains = a.fingerprint_extra()["toolchains"]
    assert isinstance(toolchains, dict) and toolchains["python"].startswith("Python 3")
    assert "g++" in toolchains["cpp"]


async def test_runs_stay_bounded_by_max_concurrency() -> None:
    s = CodeScorer("code", CodeScorer.Options(limits={"cpu_s": 1, "wall_s": 10}, max_concurrency=2,
                                              cases_per_sandbox=1))  # fmt: skip
    await s.setup()
    tests = {"inputs": ["a", "b", "c", "d"], "outputs": ["a", "b", "c", "d"]}
    started = time.monotonic()
    [result] = await s.score_batch([item("import time\ntime.sleep(1)\nprint(input())", tests)])
    assert result.value == 1.0
    # four 1-second runs through two slots cannot take less than two seconds
    assert time.monotonic() - started >= 2.0


@pytest.mark.slow
async def test_a_run_starved_of_cpu_by_an_overloaded_host_is_no_verdict() -> None:
    # A real overload: the sandbox and four CPU hogs share one CPU, so a program well
    # inside its CPU budget reaches the wall limit while waiting for the CPU.
    s = CodeScorer("code", CodeScorer.Options(limits={"cpu_s": 5, "wall_s": 1.5}))
    await s.setup()
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]  # noqa: ASYNC220
    try:
        [result] = await s.score_batch([item("while True:\n    pass")])
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        os.sched_setaffinity(0, before)
    assert result.value is None and result.error_type == "overloaded", result
    assert "overloaded" in (result.error or "")


async def test_runs_still_queued_when_the_deadline_passes_fail_as_timeout() -> None:
    s = CodeScorer("code", CodeScorer.Options(limits={"cpu_s": 1, "wall_s": 10}, max_concurrency=1))
    await s.setup()
    slow = item("import time\ntime.sleep(1.5)\nprint('ok')", secret_tests("ok"))
    token = BATCH_DEADLINE.set(time.monotonic() + 1.0)
    try:
        first, second = await s.score_batch([slow, slow])
    finally:
        BATCH_DEADLINE.reset(token)
    # one ran (it started before the deadline); the other waited for the only slot
    assert sorted(
        [
            first.error_type if first.error else "scored",
            second.error_type if second.error else "scored",
        ]
    ) == ["scored", "timeout"]


SYSCALLS = """\
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for name, nr, args in [("ptrace", 101, (0, 0, 0, 0)), ("keyctl", 250, (0, 0, 0, 0)),
                       ("io_uring_setup", 425, (1, 0)), ("unshare", 272, (0x20000,)),
                       ("x32 getpid", 0x40000000 + 39, ())]:
    result = libc.syscall(nr, *args)
    print(name, result, ctypes.get_errno() if result == -1 else 0)
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter is x86_64 only")
async def test_seccomp_filter_refuses_what_it_says(tmp_path: Path) -> None:
    async def run(seccomp: bool) -> str:
        sandbox = Sandbox(seccomp=seccomp)
        with sandbox.work_dir() as work:
            (work / "main.py").write_text(SYSCALLS)
            outcome = await sandbox.run(["python3", "main.py"], work=work, limits=Limits(),
                                        binds={"main.py": "/work/main.py"})  # fmt: skip
        assert outcome.status == "finished", outcome
        return outcome.stdout.decode()

    filtered, unfiltered = await run(True), await run(False)
    assert filtered.splitlines() == [
        "ptrace -1 1", "keyctl -1 1", "io_uring_setup -1 1", "unshare -1 1", "x32 getpid -1 1",
    ]  # fmt: skip
    assert "ptrace 0 0" in unfiltered  # without the filter PTRACE_TRACEME succeeds


async def test_fail_fast_stops_at_the_first_failing_case_and_reward_all() -> None:
    s = CodeScorer(
        "code", CodeScorer.Options(limits={"cpu_s": 1, "wall_s": 10}, fail_fast=True, reward="all")
    )
    await s.setup()
    runs: list[float] = []
    backend = s.backend
    assert isinstance(backend, LocalBackend)
    backend.on_run = runs.append
    [wrong_first, right] = await s.score_batch(
        [item("print(0)"), item("a, b = map(int, input().split())\nprint(a + b)")]
    )
    assert wrong_first.value == 0.0 and wrong_first.aspects == {
        "pass_rate": 0.0,
        "passed": 0.0,
        "total": 3.0,
    }
    assert (wrong_first.reason or "").startswith("case 0: wrong_answer")
    assert right.value == 1.0
    assert len(runs) == 1 + 3  # the wrong program ran once, the right one on every case
    # call-based tests need Python; a C++ item with them is a per-item error
    [cpp_call] = await s.score_batch(
        [item("int main(){}", {"fn_name": "f", "inputs": [[1]], "outputs": [1]}, "cpp")]
    )
    assert cpp_call.error_type == "invalid_input"


# Each case checks that nothing an earlier case of its item left is there (files in
# /work, /tmp and /dev/shm, their directories' times and extended attributes, a System V
# shared memory segment, a POSIX message queue, a process), leaves all of those behind,
# and says whether its pid is above 2: the program is pid 2 of a sandbox of its own (pid 1
# is the launcher), so only cases that followed others in one sandbox say "shared". The
# expected output proves that the cases did share a sandbox.
LEFTOVERS = """\
import ctypes, os, subprocess
seen = [p for p in ("/work/left", "/tmp/left", "/dev/shm/left") if os.path.exists(p)]
others = [pid for pid in os.listdir("/proc") if pid.isdigit()
          and int(pid) not in (1, os.getpid())]
libc = ctypes.CDLL(None, use_errno=True)
if libc.shmget(4242, 4096, 0o600) != -1:
    seen.append("shm")
if libc.mq_open(b"/left", os.O_RDWR, 0o600, None) != -1:
    seen.append("mqueue")
if os.stat("/tmp").st_mtime_ns == 4242 * 10**9 or os.listxattr("/tmp"):
    seen.append("/tmp itself")
for path in ("/work/left", "/tmp/left", "/dev/shm/left"):
    open(path, "w").write("x")
os.mkdir("/tmp/locked"); open("/tmp/locked/f", "w").close(); os.chmod("/tmp/locked", 0)
libc.shmget(4242, 4096, 0o1000 | 0o600)
libc.mq_open(b"/left", os.O_RDWR | os.O_CREAT, 0o600, None)
os.setxattr("/tmp", "user.left", b"x"); os.utime("/tmp", ns=(4242 * 10**9, 4242 * 10**9))
subprocess.Popen(["sleep", "30"], start_new_session=True)
print("clean" if not seen and not others else f"left {seen} {others}",
      "shared" if os.getpid() > 2 else "alone")
"""


async def test_the_cases_of_an_item_share_a_sandbox_and_nothing_else(scorer: CodeScorer) -> None:
    tests = {"inputs": ["", "", ""], "outputs": ["clean alone\n"] + ["clean shared\n"] * 2}
    [result] = await scorer.score_batch([item(LEFTOVERS, tests)])
    assert result.value == 1.0, result
    assert sandbox_processes() == [], "a case's background process survived the item"


async def test_a_program_cannot_stop_kill_or_rewrite_the_case_runner() -> None:
    # The launcher is pid 1 of the sandbox and runs as the program's uid. The kernel
    # drops signals sent to a namespace's init from inside, and the launcher is not
    # dumpable, so its memory (/proc/1/mem) and pipes (/proc/1/fd) are not the program's
    # to open: it could otherwise forge the report of every case. Each case prints what
    # it managed; all must say "no" and every case must still be reported.
    probe = (
        "import os, signal\nopened = []\n"
        "for path in ('/proc/1/mem', '/proc/1/fd/0', '/proc/1/fd/1', '/proc/1/fd/2'):\n"
        "    try:\n        os.close(os.open(path, os.O_RDWR))\n        opened.append(path)\n"
        "    except OSError:\n        pass\n"
        "for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL):\n"
        "    os.kill(1, sig)\n"
        "print('no' if not opened else opened, os.getppid(),"
        " 'shared' if os.getpid() > 2 else 'alone')"
    )
    everyone = "import os\nos.kill(-1, 9)\nprint('survived')"
    s = CodeScorer("code", CodeScorer.Options(limits={"cpu_s": 1, "wall_s": 1.5}))
    await s.setup()
    try:
        started = time.monotonic()
        probed, all_killed = await s.score_batch([
            item(probe, {"inputs": ["", "", ""],
                         "outputs": ["no 1 alone\n"] + ["no 1 shared\n"] * 2}),
            item(everyone, {"inputs": ["", ""], "outputs": ["survived\n"] * 2}),
        ])  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        await s.close()
    assert probed.value == 1.0, probed
    # kill(-1) spares pid 1 and the caller: alone in its namespace, it finds no one (ESRCH)
    assert verdict(all_killed) == "runtime_error", all_killed
    assert elapsed < 20
    assert sandbox_processes() == [], "a stopped or orphaned process was left behind"


async def test_a_case_that_changes_what_the_next_inherits_ends_the_shared_sandbox(
    scorer: CodeScorer,
) -> None:
    # A case can lower pid 1's priority (or its rlimits, CPU affinity, scheduling policy)
    # through their shared uid; the next case would inherit it. The launcher checks before
    # every case and stops there; the remaining cases run in sandboxes of their own.
    base = os.getpriority(os.PRIO_PROCESS, 0)  # what a sandbox started from here inherits
    changer = (
        "import os\nprint(os.getpriority(os.PRIO_PROCESS, 0))\n"
        "os.setpriority(os.PRIO_PROCESS, 1, 19)"
    )
    [result] = await scorer.score_batch(
        [item(changer, {"inputs": ["", "", ""], "outputs": [f"{base}\n"] * 3})]
    )
    assert result.value == 1.0, result  # every case at the priority it started with


async def test_a_program_crowding_its_own_cpu_gets_a_time_limit_not_overloaded() -> None:
    # Overloaded means the host kept the program from a CPU. Processes pinned to one CPU
    # keep each other waiting too; more processes than CPUs to run on get their verdict.
    crowd = (
        "import os\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "for _ in range(3):\n    if os.fork() == 0:\n        break\n"
        "while True:\n    pass"
    )
    s = CodeScorer("code", CodeScorer.Options(limits={"cpu_s": 5, "wall_s": 1.5}))
    await s.setup()
    try:
        single, shared = await s.score_batch([item(crowd, secret_tests("x")), item(crowd)])
    finally:
        await s.close()
    assert verdict(single) == "time_limit", single
    assert verdict(shared) == "time_limit", shared


def test_the_case_runner_refuses_to_run_outside_a_sandbox() -> None:
    # Between cases it kills every process it may signal: outside a PID namespace of its
    # own that would be every process of its uid on the host.
    from referee.scorers.execution._launcher import launcher

    helper = launcher()
    assert helper is not None, "no C compiler for the launcher (.ci/run installs g++)"
    done = subprocess.run(
        [helper, "cases", "1", str(1 << 30), "8", "0", "64", "1000", "100", "100", "true"],
        input=b"1\n0\n", capture_output=True, timeout=10, check=False,
    )  # fmt: skip
    assert done.returncode == 127 and b"only in a sandbox" in done.stderr, done


async def test_a_host_where_cases_cannot_share_a_sandbox_runs_each_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The start-up check runs two cases through the launcher; a launcher that reports
    # nothing (here: bwrap keeps its own init as pid 1, so the launcher is pid 2 and
    # refuses) makes the scorer say so and give each case a sandbox of its own, with the
    # same verdicts.
    from referee.scorers.execution import sandbox as sandbox_module

    real = sandbox_module.Sandbox.command

    def bwrap_init(self: Sandbox, argv: object, **kwargs: object) -> list[str]:
        cmd = real(self, argv, **kwargs)  # type: ignore[arg-type]
        return [arg for arg in cmd if arg != "--as-pid-1"]

    monkeypatch.setattr(sandbox_module.Sandbox, "command", bwrap_init)
    s = CodeScorer("code", CodeScorer.Options(limits={"cpu_s": 1, "wall_s": 5}))
    await s.setup()
    try:
        assert "cannot share a sandbox" in caplog.text
        [result] = await s.score_batch(
            [item("import os\na, b = map(int, input().split())\nprint(a + b + os.getpid() - 2)")]
        )
    finally:
        await s.close()
    assert result.value == 1.0, result  # each case was pid 2 of a sandbox of its own
