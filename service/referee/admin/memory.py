"""Will a second copy of a model fit? Free memory as the process can use it: the GPU's
free memory where CUDA is in use, else the smaller of the host's available memory, the
cgroup's headroom and ``server.memory_limit_bytes`` minus this process's RSS."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["available_bytes", "fits", "rss_bytes"]

_MARGIN = 1.1  # a loaded model takes a little more than its weight files


def rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _host_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def _gpu_free() -> int | None:
    torch = sys.modules.get("torch")  # only where a model scorer already imported it
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    free, _ = torch.cuda.mem_get_info()
    return int(free)


def available_bytes(limit: int | None = None) -> int:
    gpu = _gpu_free()
    if gpu is not None:
        return gpu
    candidates = [c for c in (_host_available(), _cgroup_headroom()) if c is not None]
    if limit is not None:
        candidates.append(max(0, limit - rss_bytes()))
    return min(candidates) if candidates else sys.maxsize


def fits(need: int, limit: int | None = None) -> bool:
    return need * _MARGIN <= available_bytes(limit)
