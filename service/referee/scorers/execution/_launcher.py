"""The uid drop and the run's limits, as one small static program compiled at start-up.

Each sandboxed run used to go through ``setpriv`` (a root server drops to ``run_as_uid``
before bwrap) and ``prlimit`` (the limits, set inside the new user namespace so the
process count is the run's own). Both are dynamically linked; ``setpriv`` also sets up
libcap-ng. Together they cost ~4 ms of CPU a run. This helper does the same two jobs in
~0.2 ms each:

- ``launch drop UID PATH ARGV0 ARGS...``: ``setgroups(0)``, ``setresgid``, ``setresuid``
  to UID, checks that root cannot be regained, ``execv(PATH)``;
- ``launch limits CPU AS NPROC FSIZE NOFILE PROGRAM ARGS...``: the limits RLIMIT_CPU
  CPU (hard CPU + 1: SIGXCPU, then SIGKILL), RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE,
  RLIMIT_NOFILE (soft = hard), RLIMIT_CORE 0 for ``PROGRAM`` (found on the sandbox's
  PATH). In a sandbox it is pid 1 of the PID namespace (bwrap ``--as-pid-1``, in place of
  bwrap's own init) and stays so: it makes itself not dumpable, runs the program as its
  child, waits, kills whatever the program left, and exits with its exit code, or 128 +
  the signal that killed it, as bwrap reports a run. bwrap's init, which it replaces,
  ran as the program's uid and could be dumped: a program could write into its memory
  through ``/proc/1/mem`` and so act outside its limits. Signals a program sends to pid 1
  are ignored (the kernel protects a namespace's init). Outside a sandbox
  (``isolation: none``) it sets the limits and execs the program;
- ``launch cases CPU AS NPROC FSIZE NOFILE WALL_MS OUT_CAP ERR_CAP PROGRAM ARGS...``:
  several test cases of one item in one sandbox (``Sandbox.run_cases``), as its pid 1
  likewise: each case a fresh child with those limits, its stdin fed through a pipe, held
  to the wall limit and the output cap; then every other process of the sandbox killed
  and reaped, and ``/work``, ``/tmp``, ``/dev/shm``, ``/dev/mqueue`` and System V IPC
  restored (empty, same mode, times, no extended attributes) before the next. A case
  could change what the next inherits from pid 1 (its rlimits, priority, CPU affinity,
  scheduling policy: same uid); when one did, the report ends there. It refuses to run
  anywhere but as pid 1 of a user namespace that maps a single, non-root uid. Input on
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
#include <sched.h>
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
#include <sys/xattr.h>
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

/* The limits of one run (argv: CPU AS NPROC FSIZE NOFILE). */
struct runlimits { rlim_t cpu, as, nproc, fsize, nofile; };

static struct runlimits read_limits(char **args) {
  struct runlimits l;
  l.cpu = (rlim_t)number(args[0], 1, 1L << 30);
  l.as = (rlim_t)number(args[1], 1, 0x7fffffffffffffffL);
  l.nproc = (rlim_t)number(args[2], 1, 1L << 30);
  l.fsize = (rlim_t)number(args[3], 0, 0x7fffffffffffffffL);
  l.nofile = (rlim_t)number(args[4], 3, 1L << 20);
  return l;
}

static int set_limit(int which, rlim_t soft, rlim_t hard) {
  struct rlimit value = {soft, hard};
  return setrlimit(which, &value);
}

/* RLIMIT_CPU (hard one second more: SIGXCPU, then SIGKILL), the rest soft = hard. */
static int apply_limits(const struct runlimits *l) {
  if (set_limit(RLIMIT_CPU, l->cpu, l->cpu + 1) || set_limit(RLIMIT_AS, l->as, l->as) ||
      set_limit(RLIMIT_NPROC, l->nproc, l->nproc) ||
      set_limit(RLIMIT_FSIZE, l->fsize, l->fsize) ||
      set_limit(RLIMIT_NOFILE, l->nofile, l->nofile) || set_limit(RLIMIT_CORE, 0, 0)) {
    return -1;
  }
  return 0;
}

static void run_program(char **argv) {
  execvp(argv[0], argv);
  fprintf(stderr, "referee-launch: cannot run %s: ", argv[0]);
  perror(NULL);
  _exit(127);
}

/* Whether this is the first process of a sandbox: pid 1 of its PID namespace (bwrap
   --as-pid-1), in a user namespace that maps one uid, not root, never the host's. */
static int in_sandbox(void) {
  if (getpid() != 1 || getuid() == 0) return 0;
  FILE *map = fopen("/proc/self/uid_map", "re");
  if (map == NULL) return 0;
  unsigned long inside, outside, count, lines = 0, ok = 1;
  while (fscanf(map, "%lu %lu %lu", &inside, &outside, &count) == 3) {
    lines++;
    if (count != 1) ok = 0;
  }
  fclose(map);
  return ok && lines == 1;
}

/* Kill every process of this sandbox but this one (pid 1), and reap them all. */
static void kill_rest(void) {
  /* again before every wait: a process forked while the signal went round is caught */
  do { kill(-1, SIGKILL); } while (waitpid(-1, NULL, 0) > 0 || errno == EINTR);
}

/* -- limits: one run ------------------------------------------------------------------ */

/* As pid 1 of the sandbox: run the program as its child and stay, not dumpable, so the
   program cannot reach this process's memory or pipes (bwrap's own init could be
   written to through /proc/1/mem), nor signal it (pid 1 ignores them). Exits as bwrap
   reports a run: the program's exit code, or 128 + the signal that killed it; whatever
   it left running dies with it. */
static int supervise(const struct runlimits *l, char **argv) {
  prctl(PR_SET_DUMPABLE, 0);
  pid_t pid = fork();
  if (pid < 0) { perror("referee-launch: fork"); return 127; }
  if (pid == 0) {
    if (apply_limits(l) != 0) { perror("referee-launch: setrlimit"); _exit(127); }
    run_program(argv);
  }
  int null = open("/dev/null", O_RDWR | O_CLOEXEC); /* the pipes are the program's alone */
  for (int fd = 0; fd < 3; fd++) { if (null >= 0) dup2(null, fd); else close(fd); }
  int status = 127 << 8, got;
  pid_t done;
  while ((done = waitpid(-1, &got, 0)) != pid) {
    if (done < 0 && errno != EINTR) break;
  }
  if (done == pid) status = got;
  kill_rest();
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* -- cases: every test case of one item, each in a fresh process, in one sandbox -------- */

struct caselimits {
  struct runlimits run;
  long long wall_us;
  size_t out_cap, err_cap;
};

/* What a case could change in this process through its uid (prlimit, setpriority,
   sched_setaffinity, sched_setscheduler on pid 1), which the next case would inherit. */
struct inherited {
  struct rlimit limits[RLIM_NLIMITS];
  int priority, policy;
  struct sched_param param;
  cpu_set_t cpus;
};

static void take_inherited(struct inherited *s) {
  memset(s, 0, sizeof *s);
  for (int r = 0; r < RLIM_NLIMITS; r++) getrlimit(r, &s->limits[r]);
  errno = 0;
  s->priority = getpriority(PRIO_PROCESS, 0);
  s->policy = sched_getscheduler(0);
  sched_getparam(0, &s->param);
  sched_getaffinity(0, sizeof s->cpus, &s->cpus);
}

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

/* All of stdin, NUL-terminated. */
static char *read_stdin(size_t *size) {
  size_t cap = 1 << 16, used = 0;
  char *buf = malloc(cap + 1);
  for (;;) {
    if (buf == NULL) return NULL;
    if (used == cap) {
      cap *= 2;
      char *grown = realloc(buf, cap + 1);
      if (grown == NULL) { free(buf); return NULL; }
      buf = grown;
    }
    ssize_t n = read(0, buf + used, cap - used);
    if (n < 0) { if (errno == EINTR) continue; free(buf); return NULL; }
    if (n == 0) break;
    used += (size_t)n;
  }
  buf[used] = 0;
  *size = used;
  return buf;
}

/* The CPUs a process may run on (0: unknown). */
static int cpus_of(long pid) {
  cpu_set_t set;
  if (sched_getaffinity((pid_t)pid, sizeof set, &set) != 0) return 0;
  return CPU_COUNT(&set);
}

/* CPU seconds used and seconds spent waiting for a CPU by every process here but this
   one (the case's live processes), their number, and how many CPUs they may use. */
static void usage_here(double *cpu, double *wait, int *procs, int *cpus) {
  long tick = sysconf(_SC_CLK_TCK);
  DIR *proc = opendir("/proc");
  cpu_set_t any;
  CPU_ZERO(&any);
  *cpu = *wait = 0;
  *procs = 0;
  *cpus = 0;
  if (proc == NULL) return;
  struct dirent *e;
  char path[64], text[1024];
  while ((e = readdir(proc)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end != 0 || pid <= 1) continue;
    cpu_set_t set;
    if (sched_getaffinity((pid_t)pid, sizeof set, &set) == 0) CPU_OR(&any, &any, &set);
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) continue;
    text[n] = 0;
    (*procs)++;
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
  *cpus = CPU_COUNT(&any);
  if (*cpus == 0) *cpus = cpus_of(0);
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

/* The writable directories (and POSIX message queues) as the first case found them:
   empty, their own mode, times and no extended attributes. */
static const char *writable[] = {"/work", "/tmp", "/dev/shm", "/dev/mqueue"};
#define N_WRITABLE (sizeof writable / sizeof *writable)
static struct stat found[N_WRITABLE];
static int present[N_WRITABLE];

static void take_writable(void) {
  for (size_t i = 0; i < N_WRITABLE; i++) present[i] = lstat(writable[i], &found[i]) == 0;
}

static int restore_writable(void) {
  int left = 0;
  remove_ipc();
  for (size_t i = 0; i < N_WRITABLE; i++) {
    if (!present[i]) continue;
    chmod(writable[i], found[i].st_mode & 07777);
    int fd = open(writable[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) { left = -1; continue; }
    char names[4096];
    ssize_t n = flistxattr(fd, names, sizeof names);
    if (n < 0 && errno != ENOTSUP) left = -1;
    for (ssize_t at = 0; at < n; at += (ssize_t)strlen(names + at) + 1) {
      /* user.* are the ones a program can set (security.* labels are the host's) */
      if (strncmp(names + at, "user.", 5) == 0 && fremovexattr(fd, names + at) != 0) left = -1;
    }
    struct timespec times[2] = {found[i].st_atim, found[i].st_mtim};
    if (wipe(dup(fd), 0) != 0) left = -1;
    if (futimens(fd, times) != 0) left = -1;
    close(fd);
  }
  return left;
}

static void nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Read what is there (at most 1 MiB a call, so the wall limit is checked in between);
   keep up to `keep` bytes. 1: open, 0: at its end. */
static int drain(int fd, char *into, size_t *used, size_t keep) {
  char chunk[65536];
  for (int round = 0; round < 16; round++) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0) { if (errno == EINTR) continue; return errno == EAGAIN ? 1 : 0; }
    if (n == 0) return 0;
    size_t take = (size_t)n;
    if (*used + take > keep) take = keep > *used ? keep - *used : 0;
    memcpy(into + *used, chunk, take);
    *used += take;
  }
  return 1;
}

static void drain_all(int fd, char *into, size_t *used, size_t keep) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  while (drain(fd, into, used, keep)) {}
}

static void close_pipes(int pipes[][2], int n) {
  for (int k = 0; k < n; k++) { close(pipes[k][0]); close(pipes[k][1]); }
}

/* Runs one case and reports it. Returns 1 when the report must end after it: the case was
   killed at its wall limit, or could not be run as asked. */
static int run_case(int index, const char *input, size_t input_size,
                     const struct caselimits *lim, char **argv, char *out, char *err) {
  int p[4][2]; /* stdin, stdout, stderr, and the child's word that its limits failed */
  int made = 0;
  while (made < 4 && pipe2(p[made], O_CLOEXEC) == 0) made++;
  if (made < 4) {
    close_pipes(p, made);
    dprintf(1, "case %d error 0 0 0 0 0 0 0 0\n", index);
    return 1;
  }
  long long start = now_us();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[0][0], 0); dup2(p[1][1], 1); dup2(p[2][1], 2);
    signal(SIGPIPE, SIG_DFL);
    if (apply_limits(&lim->run) != 0) {
      int why = errno;
      if (write(p[3][1], &why, sizeof why) < 0) {}
      _exit(127);
    }
    run_program(argv);
  }
  close(p[0][0]); close(p[1][1]); close(p[2][1]); close(p[3][1]);
  if (pid < 0) {
    close(p[0][1]); close(p[1][0]); close(p[2][0]); close(p[3][0]);
    dprintf(1, "case %d error 0 0 0 0 0 0 0 0\n", index);
    return 1;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  int in_fd = p[0][1], out_fd = p[1][0], err_fd = p[2][0];
  nonblocking(in_fd); nonblocking(out_fd); nonblocking(err_fd);
  if (input_size == 0) { close(in_fd); in_fd = -1; }
  size_t fed = 0, out_used = 0, err_used = 0;
  int out_open = 1, err_open = 1, exited = 0, status = 0, procs = 0, cpus = 0;
  const char *kind = NULL;
  double cpu = 0, wait = 0;
  while (!exited || out_open || err_open) {
    long long left_us = lim->wall_us - (now_us() - start);
    if (left_us <= 0) {
      usage_here(&cpu, &wait, &procs, &cpus);
      kind = "wall";
      break;
    }
    struct pollfd fds[4];
    int n = 0, at_in = -1, at_out = -1, at_err = -1, at_pid = -1;
    if (in_fd >= 0) { at_in = n; fds[n].fd = in_fd; fds[n++].events = POLLOUT; }
    if (out_open) { at_out = n; fds[n].fd = out_fd; fds[n++].events = POLLIN; }
    if (err_open) { at_err = n; fds[n].fd = err_fd; fds[n++].events = POLLIN; }
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
      out_open = drain(out_fd, out, &out_used, lim->out_cap + 1);
      if (out_used > lim->out_cap) { kind = "output"; break; }
    }
    if (at_err >= 0 && fds[at_err].revents) err_open = drain(err_fd, err, &err_used, lim->err_cap);
    if (!exited && (at_pid < 0 || fds[at_pid].revents)) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
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
  if (kind == NULL || strcmp(kind, "output") != 0)
    drain_all(out_fd, out, &out_used, lim->out_cap + 1);
  drain_all(err_fd, err, &err_used, lim->err_cap);
  int why = 0;
  int limits_failed = read(p[3][0], &why, sizeof why) == (ssize_t)sizeof why;
  close(out_fd); close(err_fd); close(p[3][0]);
  if (limits_failed) kind = "error";
  if (out_used > lim->out_cap) { out_used = lim->out_cap; if (kind == NULL) kind = "output"; }
  int code = 0;
  if (kind == NULL) {
    if (WIFSIGNALED(status)) { kind = "signal"; code = WTERMSIG(status); }
    else { kind = "exit"; code = WEXITSTATUS(status); }
  }
  dprintf(1, "case %d %s %d %lld %lld %lld %d %d %zu %zu\n", index, kind, code,
          (long long)(cpu * 1e6), (long long)(wait * 1e6), wall, procs, cpus, out_used,
          err_used);
  write_all(1, out, out_used);
  write_all(1, err, err_used);
  return strcmp(kind, "wall") == 0 || strcmp(kind, "error") == 0;
}

/* stdin: "N\n" then N times "SIZE\n" and SIZE bytes. stdout: per case a line
   "case I KIND CODE CPU_US WAIT_US WALL_US PROCS CPUS OUT ERR" (KIND: exit, signal,
   wall, output, error; at a wall kill CPU_US and WAIT_US are the live processes' CPU
   and CPU wait, PROCS their number, CPUS the CPUs they may use), then OUT bytes of its
   stdout and ERR of its stderr. The report ends early after a case killed at its wall
   limit (a program that sleeps or blocks would hold the sandbox for the wall limit of
   every case in turn: the server runs the rest side by side) or one that could not be
   run; with "wiped-not I" when the directories could not be restored for case I; with
   "changed I" when a case changed what the next would inherit from this process. */
static int cases(char **args, char **argv) {
  struct caselimits lim;
  lim.run = read_limits(args);
  lim.wall_us = number(args[5], 1, 1L << 40) * 1000LL;
  lim.out_cap = (size_t)number(args[6], 1, 1L << 31);
  lim.err_cap = (size_t)number(args[7], 1, 1L << 31);
  signal(SIGPIPE, SIG_IGN);
  struct inherited first, now;
  take_inherited(&first);
  take_writable();
  size_t size;
  char *all = read_stdin(&size);
  char *out = malloc(lim.out_cap + 1), *err = malloc(lim.err_cap);
  if (all == NULL || out == NULL || err == NULL) {
    fputs("referee-launch: out of memory\n", stderr);
    return 127;
  }
  char *at = all, *end = all + size;
  long count = strtol(at, &at, 10);
  if (at >= end || *at++ != '\n' || count < 1) {
    fputs("referee-launch: bad case input\n", stderr);
    return 127;
  }
  for (long i = 0; i < count; i++) {
    char *text = at;
    long long case_size = strtoll(text, &at, 10);
    if (at == text || at >= end || *at++ != '\n' || case_size < 0 || case_size > end - at) {
      fputs("referee-launch: bad case input\n", stderr);
      return 127;
    }
    if (i > 0) {
      take_inherited(&now);
      if (memcmp(&first, &now, sizeof first) != 0) { dprintf(1, "changed %ld\n", i); return 0; }
      if (restore_writable() != 0) { dprintf(1, "wiped-not %ld\n", i); return 0; }
    }
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
    struct runlimits l = read_limits(argv + 2);
    if (in_sandbox()) return supervise(&l, argv + 7);
    if (apply_limits(&l) != 0) { perror("referee-launch: setrlimit"); return 127; }
    run_program(argv + 7);
  }
  if (argc >= 11 && strcmp(argv[1], "cases") == 0) {
    /* Between cases it kills every process it can signal: only as pid 1 of a sandbox. */
    if (!in_sandbox()) {
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
