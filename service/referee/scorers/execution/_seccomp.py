"""The sandbox's seccomp filter: a classic-BPF program handed to bwrap (``--seccomp FD``).

It narrows the kernel surface a program can reach; the namespaces, not this filter, are
what keep it from the network, the host's files and other processes. On x86_64 it:

- kills a process that makes a system call through another ABI (i386 ``int 0x80``) and
  refuses the x32 ABI (numbers with bit 30 set): classic ways around a filter;
- answers EPERM to system calls a program under test has no use for, with a history of
  kernel bugs or of reaching outside: ptrace and process_vm_*, kcmp; keyctl, add_key,
  request_key; bpf, perf_event_open, userfaultfd; io_uring_*; mount and the new mount
  API, umount2, pivot_root, chroot, unshare, setns; open_by_handle_at,
  name_to_handle_at; module, kexec, swap, reboot, clock and quota calls; syslog, acct,
  fanotify_init, lookup_dcookie, vhangup, uselib, iopl, ioperm, memfd_secret.

On other architectures there is no filter (``FILTER`` is None) and the scorer's health
says so.
"""

from __future__ import annotations

import errno
import platform
import struct

__all__ = ["BLOCKED_X86_64", "FILTER", "build_filter"]

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_KILL_PROCESS = 0x80000000
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000

# name -> x86_64 system call number (arch/x86/entry/syscalls/syscall_64.tbl)
BLOCKED_X86_64: dict[str, int] = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "keyctl": 250, "add_key": 248, "request_key": 249,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442, "unshare": 272, "setns": 308,
    "open_by_handle_at": 304, "name_to_handle_at": 303,
    "init_module": 175, "finit_module": 313, "delete_module": 176,
    "kexec_load": 246, "kexec_file_load": 320, "swapon": 167, "swapoff": 168,
    "reboot": 169, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159,
    "clock_adjtime": 305, "quotactl": 179, "quotactl_fd": 443, "syslog": 103, "acct": 163,
    "fanotify_init": 300, "lookup_dcookie": 212, "vhangup": 153, "uselib": 134,
    "iopl": 172, "ioperm": 173, "memfd_secret": 447,
}  # fmt: skip


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build_filter(arch: int, blocked: list[int], refuse_x32: bool) -> bytes:
    """The BPF program: wrong arch -> kill; x32 or a blocked number -> EPERM; else allow."""
    numbers = sorted(set(blocked))
    checks = len(numbers) + (1 if refuse_x32 else 0)
    # layout: [ld arch][jeq arch][ld nr][x32?][jeq nr]... [allow][errno][kill]
    prog = [_op(_LD_W_ABS, 4), _op(_JEQ, arch, 0, checks + 3), _op(_LD_W_ABS, 0)]
    remaining = checks
    if refuse_x32:
        prog.append(_op(_JGE, _X32_BIT, remaining, 0))  # -> errno
        remaining -= 1
    for number in numbers:
        prog.append(_op(_JEQ, number, remaining, 0))  # jt lands on errno
        remaining -= 1
    prog += [_op(_RET, _ALLOW), _op(_RET, _ERRNO | errno.EPERM), _op(_RET, _KILL_PROCESS)]
    return b"".join(prog)


FILTER: bytes | None = (
    build_filter(_AUDIT_ARCH_X86_64, list(BLOCKED_X86_64.values()), refuse_x32=True)
    if platform.machine() in ("x86_64", "AMD64")
    else None
)
