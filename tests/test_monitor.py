"""The monitoring panel: its data (``snapshot``), the live widget, the static snapshot and ``%monitor``.

Server tests share one deployed classifier; every wait polls with a deadline.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

import nbdeploy
from nbdeploy import config
from nbdeploy.capture.schema import infer_schema
from nbdeploy.monitor.panel import (
    Panel,
    StaticPanel,
    open_panel,
    predictions_figure,
    snapshot,
    static_html,
    traffic_figure,
)
from nbdeploy.monitor.store import save_reference
from nbdeploy.registry import STOPPED, Registry
from nbdeploy.runtime.recorder import Recorder

T = TypeVar("T")
FEATURES = ["tenure", "monthly", "support_calls"]
PNG = b"\x89PNG\r\n\x1a\n"


def _until(get: Callable[[], T], ok: Callable[[T], bool], deadline_s: float = 60.0, what: str = "") -> T:
    """Poll ``get`` until ``ok`` holds for its value, or fail with the last value seen."""
    end = time.monotonic() + deadline_s
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline_s:.0f} s: {what}; last value: {value!r}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def served(churn_data):
    """A classifier deployed once for this module (stopped at its end, even on failure)."""
    X, y = churn_data
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X[FEATURES], y)
    dep = nbdeploy.deploy(model, name="monitor-churn", sample=X[FEATURES][:400])
    try:
        yield dep, X[FEATURES]
    finally:
        dep.stop()


@pytest.mark.slow
def test_snapshot_counts_the_traffic_and_scores_the_feedback(served):
    dep, X = served
    before = snapshot(dep)
    ids, truth = [], []
    for i in range(8):  # 8 requests of 5 rows: 40 labelled rows, every 4th label wrong -> 30/40 right
        preds = dep.predict(X[i * 5 : i * 5 + 5])
        ids.append(dep.last_request_id)
        truth.append([int(p) if (i * 5 + j) % 4 else 1 - int(p) for j, p in enumerate(preds)])
    assert dep.feedback(ids, truth) == 8

    data = _until(
        lambda: snapshot(dep),
        lambda d: (
            d.labelled == 40
            and d.logged_requests == before.logged_requests + 8
            and d.total_requests == before.total_requests + 8
        ),
        what="feedback in the log, requests in the log and in the service's counter",
    )
    assert data.accuracy == 0.75  # exactly 30 of 40
    assert data.mae is None and data.status == "running" and data.total_from == "metrics"
    assert data.total_requests - before.total_requests == 8  # the service's own counter
    acc = data.accuracy_over_time
    assert set(acc["metric"]) == {"accuracy"} and acc["n"].sum() == 40
    assert round(float((acc["value"] * acc["n"]).sum())) == 30
    assert data.rate is not None and data.rate > 0 and data.p50_ms is not None and data.p95_ms >= data.p50_ms
    assert data.error_rate == 0.0 and data.errors == 0
    assert data.labels and len(data.live_predictions) >= 40
    assert list(data.drift.index) == [*FEATURES, "prediction"]
    assert (data.drift["n_current"] >= 40).all()
    assert set(data.drift["test"]) == {"too few rows"}  # under DriftThresholds.min_current rows: not judged yet

    shown = dep.monitor(live=False)  # the static snapshot: tiles, three PNGs, the drift table
    assert isinstance(shown, StaticPanel)
    page = shown._repr_html_()
    assert page.count("data:image/png;base64,") == 3
    assert "Drift against the deploy-time sample" in page and "tenure" in page
    assert re.search(r"Requests</div><div[^>]*>\d", page)


@pytest.mark.slow
def test_live_panel_refreshes_its_tiles_and_stops_when_closed(served):
    dep, X = served
    panel = dep.monitor(interval=0.2)
    assert isinstance(panel, Panel)
    try:
        assert panel.live and panel.data is not None and panel.error is None
        start = panel.data.total_requests
        for i in range(6):
            dep.predict(X[i : i + 2])
        data = _until(
            lambda: panel.data,
            lambda d: d.total_requests == start + 6 and d.source == "metrics" and d.p50_ms is not None,
            what="the panel's request count to rise by 6",
        )
        assert f">{data.total_requests:,}<" in panel.tiles["requests"].value
        assert "ms<" in panel.tiles["p50"].value and "ms<" in panel.tiles["p95"].value
        assert "0 %" in panel.tiles["errors"].value
        assert sum(panel.charts.data["traffic"]["all"]["n"]) >= 6  # the browser's charts: traffic per bucket
        assert panel.charts.data["version"] == dep.version and panel.charts.drift["dist"]["prediction"]
        assert "updated" in panel._status.value
        bundle = panel._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
    finally:
        panel.close()
    assert not panel.live and panel._thread is not None and not panel._thread.is_alive()
    assert panel.widget.comm is None  # closed: the view leaves the notebook
    assert "updates closed" in panel._status.value


@pytest.mark.slow
def test_panel_stops_when_the_deployment_stops(churn_data, stop_after):
    X, _ = churn_data
    dep = nbdeploy.deploy(lambda df: df["monthly"] * 2.0, name="monitor-stops", sample=X[FEATURES][:200])
    stop_after(dep)
    panel = Panel(dep, interval=0.2)
    try:
        assert panel.live
        dep.predict(X[FEATURES][:3])
        dep.stop()
        panel._thread.join(timeout=60)
        assert not panel.live
        assert panel.data.status == "stopped" and "updates ended" in panel._status.value
        assert panel.charts.data["at"] == panel.data.at  # the last picture stays
        numbers = dep.monitor(live=False)  # a stopped deployment still has its log: numbers, histogram
        assert (
            not numbers.data.labels
            and numbers.data.total_from == "log"
            and numbers.data.total_requests == len(dep.requests())
        )
    finally:
        panel.close()


@pytest.mark.slow
def test_monitor_magic(served):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    dep, _ = served
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbdeploy")
    shown = shell.run_line_magic("monitor", f"{dep.name} --static")
    assert isinstance(shown, StaticPanel) and shown.data.name == dep.name
    panel = shell.run_line_magic("monitor", f"{dep.name} --interval 0.5")
    try:
        assert isinstance(panel, Panel) and panel.live and panel.interval == 0.5
    finally:
        panel.close()
    with pytest.raises(UsageError, match="DeploymentNotFound: no deployment 'nothing-here'"):
        shell.run_line_magic("monitor", "nothing-here")
    with pytest.raises(UsageError, match="--interval must be a positive number"):
        shell.run_line_magic("monitor", f"{dep.name} --interval 0")
    from nbdeploy.monitor.fleet import Fleet

    fleet = shell.run_line_magic("monitor", "")  # no name: every deployment as a tile
    assert isinstance(fleet, Fleet) and dep.name in fleet.buttons
    assert f"%monitor {dep.name}" in dep._repr_html_()  # the %deploy card says how to open the panel


# -------------------------------------------------------------------------------- no server: a recorded log


def _recorded(
    name: str,
    predict: Callable[[pd.DataFrame], Any],
    feedback: Callable[[Any], Any] | None,
    proba: Callable[[pd.DataFrame], Any] | None = None,
) -> Any:
    """A stopped deployment whose request log and reference were written as the service writes them (``proba``:
    the requests were predict_proba's, of classes 0 and 1)."""
    rng = np.random.default_rng(7)
    X = pd.DataFrame({"tenure": rng.integers(0, 72, 300), "monthly": rng.normal(70, 20, 300).round(2)})
    reg = Registry()
    rec = reg.allocate(name, "local", {"schema": infer_schema(X)})
    reg.update(name, rec.version, status=STOPPED)
    directory = config.deployment_dir(name, rec.version)
    save_reference(directory, X, np.asarray(predict(X)).tolist())
    recorder = Recorder(directory)
    now = time.time()
    for i in range(120):
        live = X.sample(2, random_state=i)
        live["monthly"] += 30 if i >= 60 else 0
        preds = np.asarray(predict(live)).tolist()
        rid = uuid.uuid4().hex[:16]
        status = 400 if i % 20 == 19 else 200
        ok = status == 200
        scores = {"method": "predict_proba", "classes": [0, 1], "values": proba(live)} if proba and ok else None
        recorder._put(  # the service's own record, with chosen times
            ("request", (rid, now - 120 + i, 3.0 + i % 5, status, live.to_dict("records") if ok else None,
                         preds if ok else None, None if ok else "column 'tenure': bad", scores))
        )  # fmt: skip
        if feedback is not None and ok:
            recorder._put(("feedback", (rid, now, feedback(preds))))
    assert recorder.flush(30)
    return reg.get(name, rec.version)


def test_snapshot_of_a_recorded_log_without_a_server():
    rec = _recorded("monitor-recorded", lambda d: (d.monthly > 80).astype(int), lambda p: [1 - p[0], p[1]])
    data = snapshot(rec)
    assert data.status == "stopped" and data.total_from == "log"
    assert data.total_requests == 120 and data.errors == 6 and data.logged_requests == 120
    assert data.accuracy == 0.5 and data.labelled == 228  # one of each request's two labels is wrong
    assert data.drifted == ["monthly"] and data.drift.loc["tenure", "drifted"] == False  # noqa: E712
    assert data.traffic["requests"].sum() == 120 and data.traffic["errors"].sum() == 6
    assert data.labels and set(np.unique(data.live_predictions)) <= {0, 1}
    page = static_html(data)
    assert page.count("data:image/png;base64,") == 3
    assert "#ffebe9" in page and "#dafbe1" in page  # a drifted (red) row and an ok (green) row


def test_numbers_get_a_histogram_and_mae():
    rec = _recorded("monitor-numbers", lambda d: d.monthly * 1.5, lambda p: [v + 2.0 for v in p])
    data = snapshot(rec)
    assert not data.labels and data.accuracy is None and data.mae == pytest.approx(2.0)
    assert traffic_figure(data).startswith(PNG) and predictions_figure(data).startswith(PNG)
    panel = Panel(rec, interval=1.0)  # a stopped deployment: drawn once, never live
    assert not panel.live and panel._thread is None and panel.data.mae == pytest.approx(2.0)
    assert "not live" in panel._status.value
    acc = panel.charts.data["accuracy"]  # feedback exists: the accuracy (MAE) chart is drawn
    assert acc["metric"] == "mae" and "lo" not in acc and sum(acc["n"]) == data.labelled


class _Handle:
    """What the panel needs of a deployment handle (``monitor.source.Source``): its status comes from here."""

    def __init__(self, rec: Any, status: str) -> None:
        self.name, self.version, self.state, self.asked = rec.name, rec.version, status, 0

    def status(self) -> str:
        self.asked += 1
        return self.state


def test_the_status_comes_from_the_handle_else_a_callable_else_the_registry():
    rec = _recorded("monitor-status", lambda d: (d.monthly > 80).astype(int), None)
    handle = _Handle(rec, "degraded")
    assert snapshot(handle).status == "degraded" and handle.asked == 1
    assert snapshot(rec, status=lambda: "degraded").status == "degraded"
    assert snapshot(handle, status=lambda: "failed").status == "failed"  # an explicit callable wins
    assert snapshot(rec).status == snapshot(rec.name).status == "stopped"  # no status given: the registry's
    shown = open_panel(handle, live=False)
    assert isinstance(shown, StaticPanel) and ">degraded</b>" in shown._repr_html_()


def test_a_live_panel_asks_the_handle_and_ends_when_it_says_failed():
    rec = _recorded("monitor-handle", lambda d: d.monthly * 1.5, None)
    handle = _Handle(rec, "degraded")  # the registry says stopped; the handle is asked, not the registry
    panel = open_panel(handle, interval=0.05)
    try:
        assert isinstance(panel, Panel) and panel.live and panel.data.status == "degraded"
        _until(lambda: handle.asked, lambda n: n >= 3, what="the panel to ask the handle on every refresh")
        handle.state = "failed"
        panel._thread.join(timeout=30)
        assert not panel.live and panel.data.status == "failed" and "updates ended" in panel._status.value
    finally:
        panel.close()


def test_the_view_model_and_report_of_a_recorded_log(tmp_path):
    """What the browser draws: drifted first in the table's data, distributions, the Wilson band, the rule."""
    from nbdeploy.monitor.report import report_html
    from nbdeploy.monitor.view import view_model, wilson

    rec = _recorded("monitor-view", lambda d: (d.monthly > 80).astype(int), lambda p: [1 - p[0], p[1]])
    panel = Panel(rec, start=False)
    try:
        model = {**panel.charts.drift, **panel.charts.data}
        assert model["drifted"] == ["monthly"] and model["dataset_drift"]  # 1 of 2 features: above 30 %
        assert {f["name"]: f["drifted"] for f in model["features"]} == {"tenure": False, "monthly": True}
        assert "BH q < 0.05" in model["rule"] and "latest 228 live rows of v" in model["window"]
        hist = model["dist"]["monthly"]
        assert len(hist["edges"]) == 25 and sum(hist["reference"]) == pytest.approx(1, abs=1e-3)
        assert model["dist"]["prediction"]["kind"] == "categorical"
        acc = model["accuracy"]
        assert acc["metric"] == "accuracy" and all(
            lo <= v <= hi for lo, v, hi in zip(acc["lo"], acc["value"], acc["hi"], strict=True)
        )
        assert sum(model["traffic"]["all"]["n"]) == 120 and sum(model["traffic"]["5m"]["n"]) == 120
        assert model["history"]["t"] and model["history"]["effect"]["monthly"][-1] > 0.1
        page = report_html(panel.data, panel.cache)
        assert not re.search(r"(src|href)=['\"]?https?:|fetch\(|import\(", page)  # nothing to load from elsewhere
        assert "export default" not in page and "nbdeployPanel(el," in page
        json.dumps(view_model(panel.data, panel.cache), allow_nan=False)  # no NaN reaches the browser
    finally:
        panel.close()
    lo, hi = wilson(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert lo[0] == 0 and 0.23 < lo[1] < 0.24 and 0.76 < hi[1] < 0.77 and hi[2] == 1


def test_the_fleet_shows_a_tile_per_deployment():
    from nbdeploy.monitor.fleet import Fleet

    for name in ("monitor-fleet-a", "monitor-fleet-b"):
        rec = _recorded(name, lambda d: (d.monthly > 80).astype(int), None)
        Registry().update(rec.name, rec.version, status="running")  # no server: the tiles show what the log says
    fleet = Fleet()
    try:
        assert {"monitor-fleet-a", "monitor-fleet-b"} <= set(fleet.buttons)
        panel = fleet.open("monitor-fleet-b")
        assert panel.name == "monitor-fleet-b" and panel.data.drifted == ["monthly"]
    finally:
        if fleet.panel is not None:
            fleet.panel.close()
        for name in ("monitor-fleet-a", "monitor-fleet-b"):
            Registry().update(name, Registry().get(name).version, status=STOPPED)
