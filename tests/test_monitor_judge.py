"""The live panel judges drift in a worker process (``monitor.judge``), not in the kernel.

A stopped version's request log written as the service writes it (no server needed: the panel reads the log), a
40-feature reference with three features shifted in the live traffic. The worker's judgement must be the kernel's
judgement (same table, same flags and history), a dead worker must be replaced and, past that, the kernel judges
again; closing the panel or the kernel's end of the pipe ends the worker. The CPU it saves the kernel is measured by
``bench/panel.py``, not here.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import numpy as np
import pandas as pd
import pytest

from nbdeploy import config
from nbdeploy.capture.schema import infer_schema
from nbdeploy.monitor.judge import MAX_FAILURES, Judge
from nbdeploy.monitor.widget import Panel
from nbdeploy.reference import save_reference
from nbdeploy.registry import STOPPED, Registry
from nbdeploy.runtime.recorder import Recorder
from nbdeploy.targets._process import is_alive

FEATURES = 40
SHIFTED = ["f000", "f001", "f002"]


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    cols = {f"f{i:03d}": rng.normal(i % 5, 1.0, n).round(4) for i in range(FEATURES)}
    cols["plan"] = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    frame = pd.DataFrame(cols)
    for c in SHIFTED:
        frame[c] += shift
    return frame


class Log:
    """A stopped deployment with a reference and a request log the test appends to."""

    def __init__(self, name: str, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        ref = _frame(self.rng, 1000)
        reg = Registry()
        rec = reg.allocate(name, "local", {"schema": infer_schema(ref)})
        reg.update(name, rec.version, status=STOPPED)
        self.directory = config.deployment_dir(name, rec.version)
        save_reference(self.directory, ref, (ref["f010"] > 0).astype(int).to_numpy())
        self.record = reg.get(name, rec.version)
        self.recorder = Recorder(self.directory)

    def append(self, requests: int, rows: int = 5) -> None:
        start = time.time() - requests
        for i in range(requests):
            live = _frame(self.rng, rows, shift=1.5)
            preds = (live["f010"] > 0).astype(int).tolist()
            self.recorder._put(
                ("request", (uuid.uuid4().hex[:16], start + i, 2.0, 200, live.to_dict("records"), preds, None))
            )
        assert self.recorder.flush(30)


def _alive(pid: int) -> bool:
    return is_alive(pid, "nbdeploy.monitor.judge")  # running (not a zombie) and still the judge


def _gone(pid: int, within_s: float = 10.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _judged_again(panel: Panel, within_s: float = 30.0) -> None:
    """Refresh until a judgement newer than the current one is shown."""
    assert panel.data is not None
    before, end = panel.data.drift_at, time.monotonic() + within_s
    while time.monotonic() < end:
        panel.refresh()
        if panel.data.drift_at != before:
            return
    raise AssertionError(f"no new drift judgement within {within_s} s (error: {panel.error})")


def _answered(judge: Judge, panel: Panel, within_s: float = 30.0) -> None:
    assert panel.data is not None
    end = time.monotonic() + within_s
    while not judge.judge(panel.data, panel.cache, 500):
        assert time.monotonic() < end, "the worker did not answer"


@pytest.fixture
def log() -> Log:
    return Log(f"judge-{uuid.uuid4().hex[:6]}")


def test_the_worker_judges_as_the_kernel_would(log):
    log.append(100)
    worker = Panel(log.record, start=False, drift_every_s=0.0)
    kernel = Panel(log.record, start=False, drift_every_s=0.0, judge_process=False)
    try:
        assert worker.judge is not None and kernel.judge is None
        first = worker.data
        assert first is not None and first.drift_view is None  # the first picture: judged in the kernel, at once
        assert set(SHIFTED) <= set(first.drifted)
        log.append(40)
        _judged_again(worker)
        _judged_again(kernel)
        pid = worker.judge.pid
        assert pid is not None and pid != os.getpid() and _alive(pid)
        got, want = worker.data, kernel.data
        assert got is not None and want is not None
        assert got.drift_view is not None  # judged and drawn by the worker
        assert got.drift_rows == want.drift_rows > 100 * 5
        cols = ["test", "effect", "drifted", "n_current"]
        pd.testing.assert_frame_equal(got.drift[cols], want.drift[cols])
        assert got.drifted == want.drifted and set(SHIFTED) <= set(got.drifted)
        assert worker.cache.flags == kernel.cache.flags  # the hysteresis' state came back to the kernel
        assert [j.drifted for j in worker.cache.history] == [j.drifted for j in kernel.cache.history]
        assert got.attribution is not None and set(got.attribution.moves) == set(want.attribution.moves)
        # the browser gets the worker's JSON: drifted features first, the statistic over time of both judgements
        drawn = worker.charts.drift
        assert {f["name"] for f in drawn["features"][:3]} == set(SHIFTED) and drawn["features"][0]["drifted"]
        assert len(drawn["history"]["t"]) == 2 and drawn["dist"]["f000"]["kind"] == "numeric"
    finally:
        worker.close()
        kernel.close()
    assert _gone(pid)  # closing the panel ends its worker


def test_a_dead_worker_is_replaced_and_then_the_kernel_judges(log):
    log.append(60)
    panel = Panel(log.record, start=False, drift_every_s=0.0)
    assert panel.judge is not None
    pids = []
    try:
        for _ in range(MAX_FAILURES):
            log.append(5)
            _judged_again(panel)  # a worker answers (the first one, or its replacement)
            assert panel.data is not None and panel.data.drift_view is not None
            pid = panel.judge.pid
            assert pid is not None and pid not in pids
            pids.append(pid)
            os.kill(pid, signal.SIGKILL)
            assert _gone(pid)
        log.append(5)
        _judged_again(panel)  # three deaths: the kernel judges, the panel goes on
        assert panel.data is not None and panel.data.drift_view is None and panel.judge.pid is None
        assert set(SHIFTED) <= set(panel.data.drifted) and panel.error is None
        assert not [p for p in panel.data.problems if "drift" in p]
    finally:
        panel.close()


def test_the_worker_ends_with_its_pipe_and_ignores_ctrl_c(log):
    log.append(30)
    panel = Panel(log.record, start=False, judge_process=False)
    judge = Judge(log.record.name, log.record.version, log.directory, panel.cache.schema, 500)
    try:
        judge.warm(panel.cache)
        pid = judge.pid
        assert pid is not None
        # a notebook's interrupt signals the kernel's process group: the worker has a session of its own
        assert os.getsid(pid) == os.getpgid(pid) == pid != os.getpgid(0)
        panel.refresh()
        assert panel.data is not None
        _answered(judge, panel)  # past its start-up
        os.kill(pid, signal.SIGINT)  # and a Ctrl-C sent to it anyway is ignored
        log.append(5)
        _answered(judge, panel)
        assert judge.pid == pid and set(SHIFTED) <= set(panel.data.drifted)
        assert judge.proc is not None and judge.proc.stdin is not None
        judge.proc.stdin.close()  # the kernel is gone: end of file
        assert _gone(pid)
    finally:
        judge.close()
        panel.close()
