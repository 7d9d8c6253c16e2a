"""How many worker processes serve a version: as many as the cores it may use, unless told."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
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


class Started:
    """Which of a service's workers have loaded the model: a file per worker, named by its PID, in a folder of the
    arbiter's (their parent). The service is ready only when all of them are: a caller's kept connection stays with
    the worker that accepted it, so connections made while only the first worker was up all stayed on it (seen: 320
    requests of 8 clients, all answered by one of two workers)."""

    def __init__(self, expected: int, folder: Path | None = None) -> None:
        self.expected = expected
        self.folder = folder or Path(tempfile.gettempdir()) / f"nbdeploy-workers-{os.getppid()}"

    def add(self) -> None:
        """This worker is up (after the model loaded)."""
        if self.expected > 1:
            try:
                self.folder.mkdir(mode=0o700, exist_ok=True)
                mine = self.folder / str(os.getpid())
                mine.touch()
                atexit.register(_remove, mine)
                _sweep(self.folder.parent)
            except OSError as exc:  # no writable temporary folder: ready as soon as a worker answers, as before
                sys.stderr.write(f"nbdeploy: cannot tell when every worker is up ({exc}); ready per worker\n")
                self.expected = 1

    def count(self) -> int:
        """Workers up and still alive (one recycled by the watchdog leaves its file behind)."""
        alive = 0
        for entry in self.folder.glob("[0-9]*"):
            try:
                os.kill(int(entry.name), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    entry.unlink()
                continue
            except (PermissionError, ValueError):
                pass
            alive += 1
        return alive

    def all_up(self) -> bool:
        return self.expected <= 1 or self.count() >= self.expected


def _sweep(tmp: Path) -> None:
    """Folders of services whose arbiter is gone (workers stopped by a signal do not run ``atexit``)."""
    for folder in tmp.glob("nbdeploy-workers-*"):
        try:
            os.kill(int(folder.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (PermissionError, ValueError, IndexError):
            pass


def _remove(marker: Path) -> None:
    """A worker's file and, with the last one, the folder: nothing left in the temporary folder."""
    with contextlib.suppress(OSError):
        marker.unlink()
        marker.parent.rmdir()
