"""Monitoring data: the recorder, drift on synthetic shifts, feedback accuracy, metrics parsing."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import auth, notebook

import nbdeploy
from nbdeploy.monitor import metrics
from nbdeploy.monitor.drift import DriftThresholds, compute
from nbdeploy.monitor.store import RequestLog
from nbdeploy.runtime.recorder import Recorder

COLS = [f"f{i}" for i in range(8)]


def _frame(seed: int, n: int, shifted: tuple[str, ...] = ()) -> pd.DataFrame:
    df = pd.DataFrame(np.random.default_rng(seed).normal(size=(n, 8)), columns=COLS)
    for c in shifted:
        df[c] += 0.6
    return df


@pytest.mark.parametrize("n_reference", [500, 3000])
def test_exactly_the_two_shifted_features_drift(n_reference):
    ref = _frame(1, n_reference)
    shifted = compute(ref, _frame(2, 800, ("f2", "f5")))
    assert list(shifted.index[shifted.drifted]) == ["f2", "f5"]
    assert set(shifted.test) == {"ks"} and (shifted.loc[["f2", "f5"], "effect"] > 0.5).all()
    calm = compute(ref, _frame(3, 800))
    assert not calm.drifted.any()


def test_categorical_drift_and_too_few_rows():
    rng = np.random.default_rng(4)
    ref = pd.DataFrame({"plan": rng.choice(["a", "b", "c"], 600, p=[0.6, 0.3, 0.1])})
    same = pd.DataFrame({"plan": rng.choice(["a", "b", "c"], 400, p=[0.6, 0.3, 0.1])})
    moved = pd.DataFrame({"plan": rng.choice(["a", "b", "c"], 400, p=[0.2, 0.3, 0.5])})
    assert compute(ref, moved).loc["plan", "drifted"] and compute(ref, moved).loc["plan", "test"] == "chi2"
    assert not compute(ref, same).loc["plan", "drifted"]
    few = compute(ref, moved[:5])
    assert few.loc["plan", "test"] == "too few rows" and not few.loc["plan", "drifted"]
    big = compute(pd.concat([ref] * 3), moved, thresholds=DriftThresholds(jensen_shannon=0.5))
    assert big.loc["plan", "test"] == "chi2" and not big.loc["plan", "drifted"]  # significant, but too small
    assert 0.2 < big.loc["plan", "effect"] < 0.5


def test_recorder_drops_and_counts_instead_of_blocking(tmp_path):
    rec = Recorder(tmp_path, max_queue=5)
    rec._queue.put(("request", ("x",)))  # a malformed item the writer will choke on: it keeps going
    started = time.perf_counter()
    for i in range(2000):
        rec.request(f"r{i}", 1.0, 200, [{"a": i}], [i])
    assert time.perf_counter() - started < 1.0  # never waits on the writer
    assert rec.flush(10)
    written = len(RequestLog(tmp_path).requests())
    assert rec.dropped > 1 and written > 0
    assert written == rec.written and written + rec.dropped == 2001  # every record is written or counted


def test_recorder_sampling_keeps_errors(tmp_path):
    rec = Recorder(tmp_path, sample_rate=0.0001)
    for i in range(200):
        rec.request(f"ok{i}", 1.0, 200, [{"a": 1}], [1])
    rec.request("bad", 1.0, 400, None, None, "missing column 'a'")
    assert rec.flush(10)
    log = RequestLog(tmp_path).requests()
    assert "bad" in set(log.request_id) and len(log) < 10


def test_metrics_quantiles_from_histogram():
    text = "\n".join(
        [
            "# TYPE bentoml_service_request_duration_seconds histogram",
            *(
                f'bentoml_service_request_duration_seconds_bucket{{endpoint="/predict",le="{le}"}} {n}'
                for le, n in (("0.005", 50), ("0.01", 90), ("0.025", 100), ("+Inf", 100))
            ),
            "# TYPE bentoml_service_request_total counter",
            'bentoml_service_request_total{endpoint="/predict",http_response_code="200"} 95',
            'bentoml_service_request_total{endpoint="/predict",http_response_code="400"} 5',
            'bentoml_service_request_total{endpoint="/metrics",http_response_code="200"} 7',
        ]
    )
    after = metrics.parse(text + "\n", at=10.0)
    before = metrics.parse("", at=0.0)
    win = metrics.window(before, after)
    assert win.requests == 100 and win.errors == 5 and win.rate == 10.0 and win.error_rate == 0.05
    assert win.p50_ms == pytest.approx(5.0) and win.p95_ms == pytest.approx(17.5)


@pytest.mark.slow
def test_live_traffic_drift_and_feedback_accuracy():
    X = _frame(10, 3000)
    ns = notebook("def model(df):\n    return (df['f0'] + df['f1'] > 0).astype(int)\n")
    dep = nbdeploy.deploy(ns["model"], name="monitored", sample=X)
    try:
        live = _frame(11, 1000, ("f2", "f5"))
        ids, truths, right = [], [], 0
        for i in range(0, 1000, 50):
            chunk = live[i : i + 50]
            preds = dep.predict(chunk)
            assert isinstance(dep.last_request_id, str) and len(dep.last_request_id) == 16
            truth = preds.copy()
            truth[:10] = 1 - truth[:10]  # 40 of 50 right: accuracy 0.8
            right += int((truth == preds).sum())
            ids.append(dep.last_request_id)
            truths.append(truth)
        assert dep.feedback(ids, truths) == 20
        deadline = time.monotonic() + 20
        while len(dep.requests()) < 20 or dep.accuracy().n.sum() < 1000:
            assert time.monotonic() < deadline, "the request log did not fill"
            time.sleep(0.1)
        drift = dep.drift()
        assert list(drift.index[drift.drifted]) == ["f2", "f5"]
        assert drift.loc["prediction", "n_current"] == 1000
        acc = dep.accuracy(freq="1h")
        assert right == 800 and acc.metric.iloc[0] == "accuracy"
        assert (acc.value * acc.n).sum() / acc.n.sum() == pytest.approx(0.8)
        resp = httpx.post(f"{dep.url}/feedback", json={"items": [{"y_true": [1]}]}, headers=auth(dep))
        assert resp.status_code == 400 and "request_id" in resp.text
    finally:
        dep.stop()


def test_logged_requests_parse_in_order_with_each_requests_row_count():
    """``store.parse_logged``, the one parser of the panel, the drift reads and the maintenance windows: records of
    many requests validated at once; a frame in split form, a refused request, unreadable JSON and outputs that are
    not a list each keep their place (a count of 0 where nothing was kept)."""
    import json

    from nbdeploy.capture.schema import infer_schema
    from nbdeploy.monitor.store import parse_logged

    schema = infer_schema(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}))
    rec = lambda rows: json.dumps([{"a": a, "b": b} for a, b in rows])  # noqa: E731
    pairs = [
        (rec([(1.0, "p")]), "[10]"),
        (json.dumps({"columns": ["a", "b"], "data": [[2.0, "q"], [3.0, "r"]]}), "[20, 30]"),  # a frame's log
        (rec([(4.0, "s")]), '{"classes": null}'),  # outputs that are not a list
        ("not json", "[0]"),
        (rec([(5.0, "t"), (6.0, "u")]), "[50, 60]"),
    ]
    frame, preds, counts = parse_logged(pairs, schema)
    assert counts == [1, 2, 0, 0, 2]
    assert preds == [10, 20, 30, 50, 60] and frame["a"].tolist() == [1.0, 2.0, 3.0, 5.0, 6.0]
    assert frame["b"].tolist() == ["p", "q", "r", "t", "u"]
    refused = [*pairs[:1], (json.dumps([{"a": "nope", "b": "z"}]), "[1]"), pairs[4]]  # one bad request among them
    frame, preds, counts = parse_logged(refused, schema)
    assert counts == [1, 0, 2] and preds == [10, 50, 60] and frame["a"].tolist() == [1.0, 5.0, 6.0]
    every = [(rec([(float(i), "v")]), f"[{i}]") for i in range(3000)]  # the batched path, in order
    frame, preds, counts = parse_logged(every, schema)
    assert counts == [1] * 3000 and preds == list(range(3000))
    assert frame["a"].tolist() == [float(i) for i in range(3000)]
