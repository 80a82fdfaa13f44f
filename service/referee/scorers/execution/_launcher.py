"""The uid drop and the run's limits, as one small static program compiled at start-up.

Each sandboxed run used to go through ``setpriv`` (a root server drops to ``run_as_uid``
before bwrap) and ``prlimit`` (the limits, set inside the new user namespace so the
process count is the run's own). Both are dynamically linked; ``setpriv`` also sets up
libcap-ng. Together they cost ~4 ms of CPU a run. This helper does the same two jobs in
~0.2 ms each:

- ``launch drop UID PATH ARGV0 ARGS...``: ``setgroups(0)``, ``setresgid``, ``setresuid``
  to UID, checks that root cannot be regained, ``execv(PATH)``;
- ``launch limits CPU AS NPROC FSIZE NOFILE PROGRAM ARGS...``: RLIMIT_CPU CPU (hard
  CPU + 1: SIGXCPU, then SIGKILL), RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE
  (soft = hard), RLIMIT_CORE 0, then ``execvp(PROGRAM)`` (the sandbox's PATH).

(The limits cannot be set from the server with ``prlimit(2)``: that needs CAP_SYS_RESOURCE,
which a root server in a container usually lacks; and setting them before bwrap would cap
the process count of every run of the uid together.)

It is compiled with the host's C compiler (``cc``/``gcc``, statically where ``libc.a``
exists) once per process, into a new directory of its own (root's, mode 0755, so the run
uid can execute it in the sandbox but nobody else can change it; removed at exit).
Without a compiler :func:`launcher` returns None and runs use ``setpriv`` and ``prlimit``.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["INSIDE", "SOURCE", "launcher"]

INSIDE = "/.referee-launch"  # where the sandbox sees it (mounted read-only)

SOURCE = r"""
#define _GNU_SOURCE
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static long number(const char *text, long low, long high) {
  char *end;
  long value = strtol(text, &end, 10);
  if (*text == 0 || *end != 0 || value < low || value > high) {
    fprintf(stderr, "referee-launch: bad number %s\n", text);
    exit(127);
  }
  return value;
}

static void limit(int which, rlim_t soft, rlim_t hard) {
  struct rlimit value = {soft, hard};
  if (setrlimit(which, &value) != 0) { perror("referee-launch: setrlimit"); exit(127); }
}

int main(int argc, char **argv) {
  if (argc >= 5 && strcmp(argv[1], "drop") == 0) {
    long id = number(argv[2], 1, 0x7fffffffL);
    if (setgroups(0, NULL) != 0 || setresgid((gid_t)id, (gid_t)id, (gid_t)id) != 0 ||
        setresuid((uid_t)id, (uid_t)id, (uid_t)id) != 0) {
      perror("referee-launch: dropping privileges"); return 127;
    }
    if (getuid() != (uid_t)id || geteuid() != (uid_t)id || getgid() != (gid_t)id ||
        getegid() != (gid_t)id || setuid(0) == 0) {
      fputs("referee-launch: privileges not dropped\n", stderr); return 127;
    }
    execv(argv[3], argv + 4);
    perror("referee-launch: exec");
    return 127;
  }
  if (argc >= 8 && strcmp(argv[1], "limits") == 0) {
    long cpu = number(argv[2], 1, 1L << 30);
    limit(RLIMIT_CPU, (rlim_t)cpu, (rlim_t)cpu + 1);
    rlim_t as = (rlim_t)number(argv[3], 1, 0x7fffffffffffffffL);
    limit(RLIMIT_AS, as, as);
    rlim_t nproc = (rlim_t)number(argv[4], 1, 1L << 30);
    limit(RLIMIT_NPROC, nproc, nproc);
    rlim_t fsize = (rlim_t)number(argv[5], 0, 0x7fffffffffffffffL);
    limit(RLIMIT_FSIZE, fsize, fsize);
    rlim_t nofile = (rlim_t)number(argv[6], 3, 1L << 20);
    limit(RLIMIT_NOFILE, nofile, nofile);
    limit(RLIMIT_CORE, 0, 0);
    execvp(argv[7], argv + 7);
    fprintf(stderr, "referee-launch: cannot run %s: ", argv[7]);
    perror(NULL);
    return 127;
  }
  fputs("usage: referee-launch drop UID PATH ARGV0 [ARGS...] | "
        "limits CPU AS NPROC FSIZE NOFILE PROGRAM [ARGS...]\n", stderr);
  return 127;
}
"""


@functools.cache
def launcher() -> str | None:
    """The path of the compiled helper, or None (no C compiler here, or it failed)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="referee-launch-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    source, binary = folder / "launch.c", folder / "launch"
    source.write_text(SOURCE)
    for static in (["-static"], []):
        done = subprocess.run(
            [compiler, "-O2", *static, "-o", str(binary), str(source)],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode == 0:
            source.unlink()
            os.chmod(binary, 0o755)
            os.chmod(folder, 0o755)  # the run uid executes it; only its owner can change it
            return str(binary)
    return None
