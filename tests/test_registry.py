"""The sqlite registry under concurrent writers (real processes, one file)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

import nbdeploy
from nbdeploy.registry import FAILED, RUNNING, STOPPED, Registry


def _allocate_many(path: str, n: int, queue: mp.Queue) -> None:
    from pathlib import Path

    reg = Registry(Path(path))
    queue.put([reg.allocate("shared", "local", {}).version for _ in range(n)])


@pytest.mark.heavy  # real processes
def test_two_kernels_allocating_at_once_get_distinct_versions(tmp_path):
    path = tmp_path / "registry.db"
    Registry(path)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_allocate_many, args=(str(path), 25, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    got = sorted(v for _ in procs for v in queue.get(timeout=120))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got == list(range(1, 76))


def test_get_prefers_the_running_version(tmp_path):
    reg = Registry(tmp_path / "r.db")
    for _ in range(3):
        reg.allocate("m", "local", {})
    reg.update("m", 1, status=RUNNING)
    reg.update("m", 2, status=STOPPED)
    reg.update("m", 3, status=FAILED)
    assert reg.get("m").version == 1
    assert [r.version for r in reg.list()] == [1]
    reg.update("m", 1, status=STOPPED)
    assert reg.get("m").version in (1, 2)
    assert (tmp_path / "r.db").stat().st_mode & 0o777 == 0o600


def test_audit_versions_are_integers_or_missing():
    reg = Registry()
    reg.event("deploy", "audit-dtype", 3, target="local")
    reg.event("rotate-key", "audit-dtype")  # a name's key has no version
    log = nbdeploy.audit("audit-dtype")
    assert list(log.action) == ["deploy", "rotate-key"]
    assert str(log.version.dtype) == "Int64"
    assert log.version.iloc[0] == 3 and log.version.isna().iloc[1]


def test_drift_thresholds_come_from_the_top_level():
    from nbdeploy.monitor import DriftThresholds

    assert nbdeploy.DriftThresholds is DriftThresholds  # lazily: import nbdeploy does not pay for scipy
