"""Sandboxes made ahead of their run (the code scorer's pool): each serves one run only,
one that died waiting is not used, and staging a run's files never follows a link. Real
bubblewrap, as in test_code_sandbox.py."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from referee.scorers.execution.sandbox import Limits, Sandbox
from tests.support import sandbox_uid_processes


def uid_pids(uid: int = 65534) -> set[int]:
    """The processes of the sandbox uid now (any test's, any server's)."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    pids.add(int(name))
            except OSError:
                continue
    return pids


def gone_in(seconds: float, before: set[int]) -> bool:
    """No process of the sandbox uid (waiting sandboxes included) within ``seconds``,
    but those that were there ``before`` this test (another scorer's, still open)."""
    deadline = time.monotonic() + seconds
    while uid_pids() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    return not uid_pids() - before


async def test_a_sandbox_made_ahead_serves_one_run_only() -> None:
    # Runs take sandboxes made ahead of them; each must be new. Namespace ids cannot show
    # it (the kernel reuses a freed namespace's inode number), so each run checks from
    # inside what a used sandbox would still hold, then leaves all of it behind: a PID
    # namespace whose process ids have not moved on (the program is pid 2, after the
    # launcher), a loopback that has carried no packet, an empty /tmp and /work but for
    # its own program.
    before = uid_pids()
    sandbox = Sandbox(prestart=1)
    program = (
        "import os, socket\nseen = sorted(os.listdir('/tmp')) + sorted(os.listdir('/work'))\n"
        "lo = [line.split() for line in open('/proc/net/dev') if line.strip().startswith('lo:')]\n"
        "packets = int(lo[0][2]) if lo else -1\n"
        "open('/tmp/left-by-' + input(), 'w').write('x')\n"
        "with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
        "    s.sendto(b'x', ('127.0.0.1', 9))\n"
        "print(os.getpid(), packets, seen)\n"
    )
    lines = []
    try:
        for run in range(4):
            with sandbox.work_dir() as work:
                (work / "main.py").write_text(program + f"# run {run}\n")
                outcome = await sandbox.run(["python3", "-I", "main.py"], work=work,
                                            limits=Limits(), stdin=f"{run}\n".encode(),
                                            binds={"main.py": "/work/main.py"})  # fmt: skip
            assert outcome.status == "finished" and outcome.exit_code == 0, outcome
            lines.append(outcome.stdout.decode())
            # the next run's sandbox is made while this one runs: one is waiting now
            assert len(sandbox_uid_processes(waiting_too=True)) >= 1
    finally:
        await sandbox.close()
    assert lines == ["2 0 ['main.py']\n"] * 4, lines
    assert gone_in(5.0, before), sandbox_uid_processes(waiting_too=True)  # closed: none waits


async def test_a_sandbox_that_died_waiting_is_not_used() -> None:
    sandbox = Sandbox(prestart=1)
    argv, binds = ["python3", "-I", "main.py"], {"main.py": "/work/main.py"}
    try:
        with sandbox.work_dir() as work:
            (work / "main.py").write_text("print(input())\n")
            first = await sandbox.run(argv, work=work, limits=Limits(), stdin=b"1\n", binds=binds)
            await asyncio.sleep(0.2)  # the next one is made ahead meanwhile
            [waiting] = [box for queue in sandbox._pool.ready.values() for box in queue]
            os.kill(waiting.child.pid, signal.SIGKILL)  # e.g. the OOM killer
            await asyncio.wait_for(waiting.child.exited, 5)
            second = await sandbox.run(argv, work=work, limits=Limits(), stdin=b"2\n",
                                       binds=binds)  # fmt: skip
    finally:
        await sandbox.close()
    assert (first.status, first.stdout) == ("finished", b"1\n"), first
    assert (second.status, second.stdout) == ("finished", b"2\n"), second


async def test_staging_never_follows_a_link_left_in_the_work_dir(tmp_path: Path) -> None:
    # A compile step is untrusted: it could leave its artifact as a symlink or a hard
    # link to a host file that only the server can read. The server copies artifacts
    # into sandboxes made ahead, so it must refuse both instead of copying the secret.
    secret = tmp_path / "secret"
    secret.write_text("host-only secret\n")
    secret.chmod(0o600)
    sandbox = Sandbox(prestart=1)
    outcomes = []
    try:
        for link in (os.symlink, os.link):
            with sandbox.work_dir() as work:
                link(secret, work / "main.py")
                outcomes.append(await sandbox.run(["python3", "-c", "print(open('main.py').read())"],
                                                  work=work, limits=Limits(),
                                                  binds={"main.py": "/work/main.py"}))  # fmt: skip
    finally:
        await sandbox.close()
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert outcome.status == "error", outcome
        assert "not a plain file" in outcome.detail or "symbolic links" in outcome.detail
        assert b"secret" not in outcome.stdout
