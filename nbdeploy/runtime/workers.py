"""How many worker processes serve a version: as many as the cores it may use, unless told."""

from __future__ import annotations

import os
from pathlib import Path

#: The most workers "auto" starts: each holds its own copy of the model.
MAX_AUTO_WORKERS = 8


def usable_cores() -> int:
    """Cores this process may really use: its CPU affinity, bounded by a cgroup v2 quota (a container's --cpus)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def workers(raw: str | None = None) -> int:
    """``NBDEPLOY_WORKERS``: a number, or "auto" (one per usable core, up to ``MAX_AUTO_WORKERS``)."""
    raw = (os.environ.get("NBDEPLOY_WORKERS", "auto") if raw is None else raw).strip().lower()
    return min(usable_cores(), MAX_AUTO_WORKERS) if raw in {"", "auto"} else max(1, int(float(raw)))
