"""Edge deployments write the same request log as the other targets, so their panel and drift work."""

from __future__ import annotations

import time

import pytest
from test_edge import _model, data, onnx_only_python  # noqa: F401  (fixtures)

import nbdeploy
from nbdeploy.capture.schema import infer_schema
from nbdeploy.edge import server
from nbdeploy.monitor.store import RequestLog


class _Model:
    def predict(self, inputs):
        return [int(r["x"] > 0) for r in inputs]


def _until(check, deadline_s: float = 30):
    end = time.monotonic() + deadline_s
    while not (value := check()):
        assert time.monotonic() < end, "not within the deadline"
        time.sleep(0.05)
    return value


def test_the_edge_server_logs_requests_in_the_recorder_s_schema(tmp_path):
    from nbdeploy.runtime.recorder import COLUMNS

    log = server.RequestLog(str(tmp_path))
    app = server.App(_Model(), server.KeyFile(None, required=False), 10**6, 1000, log)
    assert app.predict(b'{"inputs": [{"x": 1.5}, {"x": -2}]}')[0] == 200
    assert app.predict(b'{"inputs": "nope"}')[0] == 500  # the model failed: logged too
    read = RequestLog(tmp_path)
    _until(lambda: len(read.requests()) == 2)
    frame = read.requests()
    assert sorted(frame["status"]) == [200, 500] and frame["n_rows"].max() == 2
    assert list(read._query("SELECT * FROM requests LIMIT 0").columns) == list(COLUMNS)
    import pandas as pd

    schema = infer_schema(pd.DataFrame({"x": [0.5]}))
    rows, preds = read.recent_rows(schema)
    assert list(rows["x"]) == [1.5, -2.0] and list(preds) == [1, 0]


@pytest.mark.slow
def test_an_edge_deployment_has_drift_and_a_panel(data, stop_after, monkeypatch, onnx_only_python):  # noqa: F811
    from nbdeploy.monitor.data import snapshot

    model, sample = _model("columns+logreg", *data)
    monkeypatch.setenv("NBDEPLOY_EDGE_PYTHON", onnx_only_python)
    dep = nbdeploy.deploy(model, name="edge-monitored", sample=sample, target="edge")
    stop_after(dep)
    live = sample.iloc[:300].copy()
    live["monthly"] = live["monthly"] + 3 * float(sample["monthly"].std())
    for i in range(3):
        dep.predict(live.iloc[i * 100 : i * 100 + 100])
    _until(lambda: len(dep.requests()) == 3)
    drift = dep.drift()
    assert drift.loc["monthly", "drifted"] and drift.loc["monthly", "n_current"] == 300
    data_ = snapshot(dep)
    assert data_.total_requests == 3 and data_.total_from == "log" and "monthly" in data_.drifted
