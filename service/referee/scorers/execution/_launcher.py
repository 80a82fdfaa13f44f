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
  (soft = hard), RLIMIT_CORE 0, then ``execvp(PROGRAM)`` (the sandbox's PATH);
- ``launch cases CPU AS NPROC FSIZE NOFILE WALL_MS OUT_CAP ERR_CAP PROGRAM ARGS...``:
  several test cases of one item in one sandbox (``Sandbox.run_cases``): each a fresh
  process with those limits, its stdin fed through a pipe, held to the wall limit and the
  output cap; then every other process of the sandbox killed and reaped, and ``/work``,
  ``/tmp``, ``/dev/shm`` and System V IPC emptied before the next. It runs only as the
  first process of a PID namespace of its own (pid 2, under bwrap's init) and makes
  itself not dumpable, so a case cannot reach its pipes through ``/proc``. Input on
  stdin, report on stdout: the format is in the source.

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
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
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

/* -- cases: every test case of one item, each in a fresh process, in one sandbox -------- */

struct caselimits {
  rlim_t cpu, as, nproc, fsize, nofile;
  long long wall_us;
  size_t out_cap, err_cap;
};

static long long now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000LL + t.tv_nsec / 1000;
}

static int write_all(int fd, const char *data, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n < 0) { if (errno == EINTR) continue; return -1; }
    data += n; size -= (size_t)n;
  }
  return 0;
}

static char *read_stdin(size_t *size) {
  size_t cap = 1 << 16, used = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (buf == NULL) return NULL;
    if (used == cap) { cap *= 2; buf = realloc(buf, cap); if (buf == NULL) return NULL; }
    ssize_t n = read(0, buf + used, cap - used);
    if (n < 0) { if (errno == EINTR) continue; free(buf); return NULL; }
    if (n == 0) break;
    used += (size_t)n;
  }
  *size = used;
  return buf;
}

/* CPU seconds used and seconds spent waiting for a CPU by every process here but pid 1
   (bwrap) and this one: the case's live processes. */
static void usage_here(double *cpu, double *wait) {
  long tick = sysconf(_SC_CLK_TCK);
  DIR *proc = opendir("/proc");
  *cpu = *wait = 0;
  if (proc == NULL) return;
  struct dirent *e;
  char path[64], text[1024];
  while ((e = readdir(proc)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end != 0 || pid <= 1 || pid == (long)getpid()) continue;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) continue;
    text[n] = 0;
    char *after = strrchr(text, ')');
    unsigned long long utime = 0, stime = 0;
    if (after != NULL &&
        sscanf(after + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &utime, &stime) == 2)
      *cpu += (double)(utime + stime) / (double)tick;
    snprintf(path, sizeof path, "/proc/%ld/schedstat", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    n = read(fd, text, sizeof text - 1);
    close(fd);
    unsigned long long ran = 0, waited = 0;
    if (n <= 0) continue;
    text[n] = 0;
    if (sscanf(text, "%llu %llu", &ran, &waited) == 2) *wait += waited / 1e9;
  }
  closedir(proc);
}

/* Kill every process of this sandbox but pid 1 and this one, and reap them all. */
static void kill_rest(void) {
  /* again before every wait: a process forked while the signal went round is caught */
  do { kill(-1, SIGKILL); } while (waitpid(-1, NULL, 0) > 0 || errno == EINTR);
}

/* Remove the System V shared memory, semaphores and message queues a case made (the
   sandbox's IPC namespace would otherwise carry them to the next case). */
static void remove_ipc(void) {
  static const char *tables[] = {"/proc/sysvipc/shm", "/proc/sysvipc/sem", "/proc/sysvipc/msg"};
  char line[1024];
  for (int k = 0; k < 3; k++) {
    FILE *table = fopen(tables[k], "re");
    if (table == NULL) continue;
    if (fgets(line, sizeof line, table) == NULL) { fclose(table); continue; } /* header */
    long key;
    int id;
    while (fgets(line, sizeof line, table) != NULL) {
      if (sscanf(line, "%ld %d", &key, &id) != 2) continue;
      if (k == 0) shmctl(id, IPC_RMID, NULL);
      else if (k == 1) semctl(id, 0, IPC_RMID);
      else msgctl(id, IPC_RMID, NULL);
    }
    fclose(table);
  }
}

/* Empty a directory the case could write (its files, whatever their modes); mount points
   (the program, read-only) stay. Returns 0 when nothing else is left. */
static int wipe(int dir, int depth) {
  DIR *d = fdopendir(dir);
  if (d == NULL) { close(dir); return -1; }
  int left = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (unlinkat(dir, e->d_name, 0) == 0 || errno == ENOENT) continue;
    if (errno == EBUSY) continue; /* a mount point: the program's own files */
    if (errno != EISDIR || depth > 64) { left = -1; continue; }
    fchmodat(dir, e->d_name, 0700, 0);
    int sub = openat(dir, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0 || wipe(sub, depth + 1) != 0) { left = -1; continue; }
    if (unlinkat(dir, e->d_name, AT_REMOVEDIR) != 0 && errno != EBUSY) left = -1;
  }
  closedir(d);
  return left;
}

static int wipe_all(void) {
  static const char *writable[] = {"/work", "/tmp", "/dev/shm"};
  int left = 0;
  remove_ipc();
  for (size_t i = 0; i < sizeof writable / sizeof *writable; i++) {
    chmod(writable[i], 0755);
    int fd = open(writable[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) { if (errno != ENOENT) left = -1; continue; }
    if (wipe(fd, 0) != 0) left = -1;
  }
  return left;
}

static void nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Read what is there; keep up to cap bytes (cap + 1 for stdout: one more says "over"). */
static int drain(int fd, char *into, size_t *used, size_t keep) {
  char chunk[65536];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0) { if (errno == EINTR) continue; return errno == EAGAIN ? 1 : 0; }
    if (n == 0) return 0;
    size_t take = (size_t)n;
    if (*used + take > keep) take = keep > *used ? keep - *used : 0;
    memcpy(into + *used, chunk, take);
    *used += take;
  }
}

/* Returns 1 when the case was killed at its wall limit. */
static int run_case(int index, const char *input, size_t input_size,
                     const struct caselimits *lim, char **argv, char *out, char *err) {
  int in_p[2], out_p[2], err_p[2];
  if (pipe2(in_p, O_CLOEXEC) || pipe2(out_p, O_CLOEXEC) || pipe2(err_p, O_CLOEXEC)) {
    dprintf(1, "case %d error 0 0 0 0 0 0\n", index);
    return 0;
  }
  long long start = now_us();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_p[0], 0); dup2(out_p[1], 1); dup2(err_p[1], 2);
    signal(SIGPIPE, SIG_DFL);
    limit(RLIMIT_CPU, lim->cpu, lim->cpu + 1);
    limit(RLIMIT_AS, lim->as, lim->as);
    limit(RLIMIT_NPROC, lim->nproc + 1, lim->nproc + 1); /* + this launcher */
    limit(RLIMIT_FSIZE, lim->fsize, lim->fsize);
    limit(RLIMIT_NOFILE, lim->nofile, lim->nofile);
    limit(RLIMIT_CORE, 0, 0);
    execvp(argv[0], argv);
    fprintf(stderr, "referee-launch: cannot run %s: ", argv[0]);
    perror(NULL);
    _exit(127);
  }
  close(in_p[0]); close(out_p[1]); close(err_p[1]);
  if (pid < 0) {
    close(in_p[1]); close(out_p[0]); close(err_p[0]);
    dprintf(1, "case %d error 0 0 0 0 0 0\n", index);
    return 0;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  int in_fd = in_p[1];
  nonblocking(in_fd); nonblocking(out_p[0]); nonblocking(err_p[0]);
  if (input_size == 0) { close(in_fd); in_fd = -1; }
  size_t fed = 0, out_used = 0, err_used = 0;
  int out_open = 1, err_open = 1, exited = 0, status = 0;
  const char *kind = NULL;
  double cpu = 0, wait = 0;
  while (!exited || out_open || err_open) {
    long long left_us = lim->wall_us - (now_us() - start);
    if (left_us <= 0) {
      usage_here(&cpu, &wait);
      kind = "wall";
      break;
    }
    struct pollfd fds[4];
    int n = 0, at_in = -1, at_out = -1, at_err = -1, at_pid = -1;
    if (in_fd >= 0) { at_in = n; fds[n].fd = in_fd; fds[n++].events = POLLOUT; }
    if (out_open) { at_out = n; fds[n].fd = out_p[0]; fds[n++].events = POLLIN; }
    if (err_open) { at_err = n; fds[n].fd = err_p[0]; fds[n++].events = POLLIN; }
    if (!exited && pidfd >= 0) { at_pid = n; fds[n].fd = pidfd; fds[n++].events = POLLIN; }
    int wait_ms = (int)((left_us + 999) / 1000);
    if (!exited && pidfd < 0 && wait_ms > 10) wait_ms = 10;
    if (poll(fds, (nfds_t)n, wait_ms) < 0 && errno != EINTR) { kind = "error"; break; }
    if (at_in >= 0 && fds[at_in].revents) {
      ssize_t w = write(in_fd, input + fed, input_size - fed);
      if (w > 0) fed += (size_t)w;
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || fed == input_size) {
        close(in_fd); in_fd = -1;
      }
    }
    if (at_out >= 0 && fds[at_out].revents) {
      out_open = drain(out_p[0], out, &out_used, lim->out_cap + 1);
      if (out_used > lim->out_cap) { kind = "output"; break; }
    }
    if (at_err >= 0 && fds[at_err].revents)
      err_open = drain(err_p[0], err, &err_used, lim->err_cap);
    if (!exited && (at_pid < 0 || fds[at_pid].revents)) {
      pid_t done = waitpid(pid, &status, WNOHANG);
      if (done == pid) {
        exited = 1;
        kill_rest(); /* what it left running dies with it, as a sandbox's namespace would */
      }
    }
  }
  long long wall = now_us() - start;
  if (in_fd >= 0) close(in_fd);
  if (pidfd >= 0) close(pidfd);
  if (!exited) {
    kill_rest();
    if (waitpid(pid, &status, 0) < 0) status = 0;
  }
  /* everything that could write to the pipes is gone: take what is left in them */
  if (kind == NULL || strcmp(kind, "output") != 0) {
    fcntl(out_p[0], F_SETFL, fcntl(out_p[0], F_GETFL) & ~O_NONBLOCK);
    drain(out_p[0], out, &out_used, lim->out_cap + 1);
  }
  fcntl(err_p[0], F_SETFL, fcntl(err_p[0], F_GETFL) & ~O_NONBLOCK);
  drain(err_p[0], err, &err_used, lim->err_cap);
  close(out_p[0]); close(err_p[0]);
  if (out_used > lim->out_cap) { out_used = lim->out_cap; if (kind == NULL) kind = "output"; }
  int code = 0;
  if (kind == NULL) {
    if (WIFSIGNALED(status)) { kind = "signal"; code = WTERMSIG(status); }
    else { kind = "exit"; code = WEXITSTATUS(status); }
  }
  dprintf(1, "case %d %s %d %lld %lld %lld %zu %zu\n", index, kind, code,
          (long long)(cpu * 1e6), (long long)(wait * 1e6), wall, out_used, err_used);
  write_all(1, out, out_used);
  write_all(1, err, err_used);
  return strcmp(kind, "wall") == 0;
}

/* stdin: "N\n" then N times "SIZE\n" and SIZE bytes. stdout: per case a line
   "case I KIND CODE CPU_US WAIT_US WALL_US OUT ERR" (KIND: exit, signal, wall, output,
   error), then OUT bytes of its stdout and ERR of its stderr. It ends early after a case
   killed at its wall limit (a program that sleeps or blocks would hold the sandbox for
   the wall limit of every case in turn: the server runs the rest side by side), and
   with "wiped-not" when the directories could not be emptied for the next case. */
static int cases(char **args, char **argv) {
  struct caselimits lim;
  lim.cpu = (rlim_t)number(args[0], 1, 1L << 30);
  lim.as = (rlim_t)number(args[1], 1, 0x7fffffffffffffffL);
  lim.nproc = (rlim_t)number(args[2], 1, 1L << 30);
  lim.fsize = (rlim_t)number(args[3], 0, 0x7fffffffffffffffL);
  lim.nofile = (rlim_t)number(args[4], 3, 1L << 20);
  lim.wall_us = number(args[5], 1, 1L << 40) * 1000LL;
  lim.out_cap = (size_t)number(args[6], 1, 1L << 31);
  lim.err_cap = (size_t)number(args[7], 1, 1L << 31);
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  size_t size;
  char *all = read_stdin(&size);
  char *out = malloc(lim.out_cap + 1), *err = malloc(lim.err_cap);
  if (all == NULL || out == NULL || err == NULL) {
    fputs("referee-launch: out of memory\n", stderr);
    return 127;
  }
  char *at = all, *end = all + size;
  long count = strtol(at, &at, 10);
  if (*at++ != '\n' || count < 1) { fputs("referee-launch: bad case input\n", stderr); return 127; }
  for (long i = 0; i < count; i++) {
    char *text = at;
    long long case_size = strtoll(text, &at, 10);
    if (at == text || at >= end || *at++ != '\n' || case_size < 0 || case_size > end - at) {
      fputs("referee-launch: bad case input\n", stderr); return 127;
    }
    if (i > 0 && wipe_all() != 0) { dprintf(1, "wiped-not %ld\n", i); return 0; }
    if (run_case((int)i, at, (size_t)case_size, &lim, argv, out, err)) return 0;
    at += case_size;
  }
  return 0;
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
  if (argc >= 11 && strcmp(argv[1], "cases") == 0) {
    /* Only as the first process of a PID namespace of its own (bwrap's init is 1):
       between cases it kills every other process it can signal. */
    if (getpid() != 2) {
      fputs("referee-launch: cases runs only in a sandbox\n", stderr);
      return 127;
    }
    prctl(PR_SET_DUMPABLE, 0); /* its pipes and memory stay out of the cases' reach */
    return cases(argv + 2, argv + 10);
  }
  fputs("usage: referee-launch drop UID PATH ARGV0 [ARGS...] | "
        "limits CPU AS NPROC FSIZE NOFILE PROGRAM [ARGS...] | "
        "cases CPU AS NPROC FSIZE NOFILE WALL_MS OUT_CAP ERR_CAP PROGRAM [ARGS...]\n", stderr);
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
