"""Probabilities: predict_proba / decision_function over HTTP and on the handle, logged, and scored against feedback
(AUC, log-loss, calibration) in the monitor. Server tests share one deployment per model for the module."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import auth
from sklearn.calibration import calibration_curve
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

import nbdeploy
from nbdeploy import client as client_module
from nbdeploy.monitor import scores as scores_module
from nbdeploy.monitor.store import RequestLog
from nbdeploy.runtime.model import classes_of, methods_of
from nbdeploy.runtime.recorder import Recorder, predicted_labels

NUM = ["tenure", "monthly", "support_calls"]

# ---------------------------------------------------------------------------------------------- no server


def test_methods_are_found_as_scikit_learn_means_them():
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    assert methods_of(LogisticRegression().fit(X, y), "estimator") == ["predict_proba", "decision_function"]
    assert methods_of(LinearSVC().fit(X, y), "estimator") == ["decision_function"]
    assert methods_of(SVC().fit(X, y), "estimator") == ["decision_function"]  # probability=False hides it
    assert methods_of(Pipeline([("s", StandardScaler()), ("m", LinearSVC())]).fit(X, y), "estimator") == [
        "decision_function"
    ]
    assert methods_of(Ridge().fit(X, y), "estimator") == []
    assert methods_of(lambda df: df, "function") == []
    assert classes_of(LogisticRegression().fit(X, np.where(y, "yes", "no"))) == ["no", "yes"]
    assert classes_of(Ridge().fit(X, y)) is None


def _sklearn_like(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(k), size=n)
    target = np.array([rng.choice(k, p=p) for p in proba])  # calibrated by construction
    return target, proba


@pytest.mark.parametrize("k", [2, 3, 5])
def test_auc_log_loss_and_calibration_equal_scikit_learn(k):
    target, proba = _sklearn_like(400, k, k)
    proba[:20] = np.round(proba[:20], 1)  # ties
    proba[:20] /= proba[:20].sum(axis=1, keepdims=True)
    classes = [f"c{i}" for i in range(k)]
    frame = pd.DataFrame({"y_true": [classes[t] for t in target]})
    got = scores_module.evaluate(frame, proba, classes)
    labels = np.array(classes)[target]
    if k == 2:
        expected_auc = roc_auc_score(labels == "c1", proba[:, 1])
    else:
        expected_auc = roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=classes)
    assert got.auc == pytest.approx(expected_auc, abs=1e-12)
    assert got.log_loss == pytest.approx(log_loss(labels, proba, labels=classes), abs=1e-12)
    assert got.rows == 400
    if k == 2:
        observed, predicted = calibration_curve(labels == "c1", proba[:, 1], n_bins=10)
        np.testing.assert_allclose(got.calibration["observed"], observed, atol=1e-12)
        np.testing.assert_allclose(got.calibration["mean_predicted"], predicted, atol=1e-12)
        assert got.calibration["count"].sum() == 400


def test_labels_outside_the_classes_are_left_out_and_counted():
    frame = pd.DataFrame({"y_true": [0, 1, 7, "1"]})
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.4, 0.6]])
    got = scores_module.evaluate(frame, proba, [0, 1])
    assert got.rows == 3 and got.unmatched == 1 and got.auc == 1.0


def test_predicted_labels_follow_predict():
    assert predicted_labels("predict_proba", [[0.2, 0.8], [0.6, 0.4]], ["no", "yes"]) == ["yes", "no"]
    assert predicted_labels("decision_function", [-0.3, 1.2], [0, 1]) == [0, 1]
    assert predicted_labels("decision_function", [[0.1, 0.5, -1.0]], ["a", "b", "c"]) == ["b"]
    assert predicted_labels("predict_proba", [[None, None]], [0, 1]) == [0]  # NaN rows do not crash
    assert predicted_labels("predict_proba", [[0.5, 0.5]], None) is None


def test_the_score_routes_count_as_requests_in_the_metrics():
    from nbdeploy.monitor import metrics

    text = "\n".join(
        [
            "# TYPE bentoml_service_request_total counter",
            'bentoml_service_request_total{endpoint="/predict",http_response_code="200"} 2',
            'bentoml_service_request_total{endpoint="/predict_proba",http_response_code="200"} 3',
            'bentoml_service_request_total{endpoint="/decision_function",http_response_code="404"} 1',
            'bentoml_service_request_total{endpoint="/readyz",http_response_code="200"} 9',
        ]
    )
    scrape = metrics.parse(text)
    assert scrape.total == 6 and scrape.errors == 1


OLD_SCHEMA = """
CREATE TABLE requests (request_id TEXT PRIMARY KEY, ts REAL NOT NULL, latency_ms REAL NOT NULL,
    status INTEGER NOT NULL, n_rows INTEGER NOT NULL, inputs TEXT, outputs TEXT, error TEXT);
CREATE TABLE feedback (request_id TEXT NOT NULL, ts REAL NOT NULL, y_true TEXT NOT NULL);
"""


def test_a_log_from_before_scores_is_read_then_migrated(tmp_path):
    con = sqlite3.connect(tmp_path / "requests.db")
    con.executescript(OLD_SCHEMA)
    con.execute("INSERT INTO requests VALUES ('old', ?, 1.0, 200, 1, '[{\"a\": 1}]', '[1]', NULL)", (time.time(),))
    con.execute("INSERT INTO feedback VALUES ('old', ?, '[1]')", (time.time(),))
    con.commit()
    con.close()
    log = RequestLog(tmp_path)
    frame, proba, classes = log.scored()  # the old log has no scores column: nothing scored, no error
    assert frame.empty and classes == []
    rec = Recorder(tmp_path)  # a new service on the old log adds the column
    rec.request("new", 1.0, 200, [{"a": 2}, {"a": 3}], None, None, {"method": "predict_proba", "classes": [0, 1],
                "values": [[0.3, 0.7], [0.9, 0.1]]})  # fmt: skip
    con = sqlite3.connect(tmp_path / "requests.db")
    con.execute("INSERT INTO feedback VALUES ('new', ?, '[1, 0]')", (time.time(),))
    con.commit()
    con.close()
    assert rec.flush(10)
    assert len(log.requests()) == 2
    assert list(log.feedback().sort_values("ts")["y_pred"]) == [1, 1, 0]  # labels derived from the probabilities
    frame, proba, classes = log.scored()
    assert classes == [0, 1] and list(frame["y_true"]) == [1, 0]
    np.testing.assert_array_equal(proba, [[0.3, 0.7], [0.9, 0.1]])
    Recorder(tmp_path)  # a second start finds the column there


@pytest.mark.heavy  # builds a bento
def test_a_function_has_no_probabilities_and_the_handle_says_so_before_http(churn_data, fake):
    X, _ = churn_data
    dep = nbdeploy.deploy(lambda df: df["monthly"] > 70, name="proba-fn", sample=X[NUM], target="fake")
    assert dep.methods == ["predict"] and dep.classes_ is None
    with pytest.raises(nbdeploy.errors.UsageError, match="no predict_proba: a function answers predictions only"):
        dep.predict_proba(X[NUM][:3])  # the fake target serves nothing: any HTTP would fail otherwise
    dep.stop()


# ---------------------------------------------------------------------------------------------- real servers


def assert_answers(dep: Any, got: Any, want: Any) -> None:
    """Scores over HTTP against the session's: bit for bit where the Python object serves, within the tolerance the
    card states where the compiled model does (its classes are always identical: ``predict`` is compared exactly)."""
    compiled = dep.info().get("compiled") or {}
    if compiled.get("path", "python") == "python":
        np.testing.assert_array_equal(got, want)
    else:
        parity = compiled["parity"]
        np.testing.assert_allclose(got, want, rtol=parity["rtol"], atol=parity["atol"])


def _deploy(model: Any, name: str, sample: pd.DataFrame) -> Any:
    return nbdeploy.deploy(model, name=name, sample=sample)


@pytest.fixture(scope="module")
def models(churn_data) -> Iterator[dict[str, Any]]:
    """Four fitted models and their running deployments (stopped at the end, whatever happened)."""
    X, y = churn_data
    num = X[NUM].astype(float)
    y3 = pd.cut(num["monthly"], [-np.inf, 60, 80, np.inf], labels=["low", "mid", "high"]).astype(str)
    y3 = y3.where(np.random.default_rng(1).random(len(y3)) > 0.15, "mid")  # noisy: probabilities are not 0/1
    fitted = {
        "rf": RandomForestClassifier(n_estimators=30, random_state=0).fit(num[:500], y[:500]),
        "pipe": Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]).fit(
            num[:500], y[:500]
        ),
        "gbc": GradientBoostingClassifier(n_estimators=20, random_state=0).fit(num[:500], y3[:500]),
        "svc": LinearSVC(random_state=0).fit(num[:500], y[:500]),
    }
    deps: dict[str, Any] = {}
    try:
        for key, model in fitted.items():
            deps[key] = _deploy(model, f"proba-{key}", num[:500])
        yield {"X": num, "y": y, "y3": y3, "models": fitted, "deps": deps}
    finally:
        for dep in deps.values():
            dep.stop()


@pytest.mark.slow
@pytest.mark.parametrize("key", ["rf", "pipe", "gbc"])
def test_predict_proba_over_http_equals_the_session(models, key):
    X, model, dep = models["X"], models["models"][key], models["deps"][key]
    got = dep.predict_proba(X[500:600])
    assert_answers(dep, got, model.predict_proba(X[500:600]))  # every bit through JSON
    assert dep.last_request_id
    np.testing.assert_array_equal(dep.classes_, model.classes_)
    assert dep.methods == ["predict", "predict_proba", *(["decision_function"] if key != "rf" else [])]
    records = X[500:505].to_dict(orient="records")  # every body form, as /predict
    assert_answers(dep, dep.predict_proba(records), model.predict_proba(X[500:505]))
    resp = httpx.post(
        f"{dep.url}/predict_proba",
        json={"inputs": {"columns": NUM, "data": X[500:502].to_numpy().tolist()}},
        headers=auth(dep),
    )
    assert resp.status_code == 200 and resp.headers["x-request-id"] == resp.json()["request_id"]
    assert resp.json()["classes"] == model.classes_.tolist()


@pytest.mark.slow
def test_large_frames_go_over_npz_and_equal_the_session(models, monkeypatch):
    X, model, dep = models["X"], models["models"]["rf"], models["deps"]["rf"]
    big = pd.concat([X] * 2, ignore_index=True)  # 1200 rows: over NPZ_ROWS
    assert len(big) >= client_module.NPZ_ROWS
    routes: list[str] = []
    post = client_module.ServiceClient._post

    def spy(self: Any, route: str, *args: Any) -> Any:
        routes.append(route)
        return post(self, route, *args)

    monkeypatch.setattr(client_module.ServiceClient, "_post", spy)
    assert_answers(dep, dep.predict_proba(big), model.predict_proba(big))
    assert routes == ["/frame/predict_proba"]
    svc, svc_dep = models["models"]["svc"], models["deps"]["svc"]
    assert_answers(svc_dep, svc_dep.decision_function(big), svc.decision_function(big))
    assert routes[-1] == "/frame/decision_function"


@pytest.mark.slow
def test_decision_function_of_a_linear_svc(models):
    X, model, dep = models["X"], models["models"]["svc"], models["deps"]["svc"]
    assert_answers(dep, dep.decision_function(X[500:600]), model.decision_function(X[500:600]))
    assert dep.methods == ["predict", "decision_function"]
    np.testing.assert_array_equal(dep.predict(X[500:600]), model.predict(X[500:600]))


@pytest.mark.slow
def test_a_model_without_predict_proba_gets_a_clear_error(models, monkeypatch):
    X, dep = models["X"], models["deps"]["svc"]
    monkeypatch.setattr(client_module.ServiceClient, "_post", lambda *a: pytest.fail("HTTP sent"))
    with pytest.raises(nbdeploy.errors.UsageError, match="no predict_proba") as info:
        dep.predict_proba(X[:3])
    assert "decision_function" in (info.value.hint or "")
    monkeypatch.undo()
    for route, body, content_type in [
        ("/predict_proba", b'{"inputs": [{"tenure": 1, "monthly": 2.0, "support_calls": 1}]}', "application/json"),
        ("/frame/predict_proba", b"PK\x03\x04", "application/x-npz"),
    ]:
        resp = httpx.post(f"{dep.url}{route}", content=body, headers={**auth(dep), "content-type": content_type})
        assert resp.status_code == 404, resp.text
        error = resp.json()["error"]
        assert "(LinearSVC) has no predict_proba" in error and "decision_function" in error
        assert resp.json()["methods"] == ["predict", "decision_function"]


@pytest.mark.slow
@pytest.mark.parametrize("route", ["/predict_proba", "/decision_function", "/frame/predict_proba"])
def test_new_routes_need_the_key(models, route):
    dep = models["deps"]["pipe"]
    body = {"inputs": [{"tenure": 1, "monthly": 2.0, "support_calls": 1}]}
    assert httpx.post(f"{dep.url}{route}", json=body).status_code == 401
    assert httpx.post(f"{dep.url}{route}", json=body, headers={"x-api-key": "wrong"}).status_code == 401
    if not route.startswith("/frame"):
        assert httpx.post(f"{dep.url}{route}", json=body, headers=auth(dep)).status_code == 200


@pytest.mark.slow
def test_new_routes_validate_and_limit_as_predict(models):
    dep = models["deps"]["pipe"]
    resp = httpx.post(f"{dep.url}/predict_proba", json={"inputs": [{"tenure": 1, "monthly": 2.0}]}, headers=auth(dep))
    assert resp.status_code == 400 and "missing column 'support_calls'" in resp.text
    resp = httpx.post(
        f"{dep.url}/predict_proba", content=b"a,b\n1,2", headers={**auth(dep), "content-type": "text/csv"}
    )
    assert resp.status_code == 415  # the guard's JSON check covers the route


def _feedback_round(dep: Any, X: pd.DataFrame, y: pd.Series, parts: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """predict_proba in a few requests, feedback for each; the probabilities and labels sent."""
    probas, labels = [], []
    for chunk in np.array_split(np.arange(len(X)), parts):
        probas.append(dep.predict_proba(X.iloc[chunk]))
        labels.append(y.iloc[chunk].to_numpy())
        assert dep.feedback(dep.last_request_id, labels[-1]) == 1
    return np.concatenate(probas), np.concatenate(labels)


def _wait_scored(dep: Any, rows: int) -> dict[str, Any]:
    for _ in range(50):
        metrics = dep.probability_metrics()
        if metrics["rows"] >= rows:
            return metrics
        time.sleep(0.1)
    return metrics


@pytest.mark.slow
def test_feedback_on_probabilities_gives_auc_log_loss_calibration_and_the_panel_shows_them(models):
    from nbdeploy.monitor.panel import Panel, snapshot, static_html

    X, y, dep, model = models["X"][500:600], models["y"][500:600], models["deps"]["pipe"], models["models"]["pipe"]
    proba, labels = _feedback_round(dep, X, y)
    assert_answers(dep, proba, model.predict_proba(X))
    metrics = _wait_scored(dep, len(X))
    assert metrics["rows"] == len(X) and metrics["positive_class"] == 1
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, proba[:, 1]), abs=1e-12)
    assert metrics["log_loss"] == pytest.approx(log_loss(labels, proba), abs=1e-12)
    table = dep.calibration()
    observed, predicted = calibration_curve(labels, proba[:, 1], n_bins=10)
    np.testing.assert_allclose(table["observed"], observed, atol=1e-12)
    np.testing.assert_allclose(table["mean_predicted"], predicted, atol=1e-12)
    assert table["count"].sum() == len(X)
    # accuracy counts the class the probabilities pick
    accuracy = dep.accuracy()
    assert accuracy["n"].sum() == len(X)
    expected = float((model.classes_[proba.argmax(axis=1)] == labels).mean())
    assert float((accuracy["value"] * accuracy["n"]).sum() / accuracy["n"].sum()) == pytest.approx(expected)
    data = snapshot(dep)
    assert data.auc == pytest.approx(metrics["auc"], abs=1e-15) and data.log_loss == pytest.approx(metrics["log_loss"])
    assert data.scored == len(X) and not data.calibration.empty
    page = static_html(data)
    assert f"{metrics['auc']:.3f}" in page and f"log-loss {metrics['log_loss']:.3f}" in page
    assert page.count("data:image/png") == 4  # traffic, predictions, accuracy, calibration
    panel = Panel(dep, start=False)  # the live panel: the tile, and the chart's points for the browser to draw
    assert f"{metrics['auc']:.3f}" in panel.tiles["auc"].value
    calibration = panel.charts.data["calibration"]
    assert calibration["of"] == "class 1" and calibration["n"] == table["count"].tolist()
    assert calibration["observed"] == pytest.approx(table["observed"].tolist(), abs=1e-6)
    panel.close()
    # a wrong number of labels for a predict_proba request is refused, as for /predict
    dep.predict_proba(X[:3])
    with pytest.raises(nbdeploy.PredictionError, match="2 labels for a request of 3 rows"):
        dep.feedback(dep.last_request_id, [0, 1])


@pytest.mark.slow
def test_multiclass_feedback_gives_one_vs_rest_macro_auc(models):
    X, y3, dep, model = models["X"][500:600], models["y3"][500:600], models["deps"]["gbc"], models["models"]["gbc"]
    proba, labels = _feedback_round(dep, X, y3, parts=2)
    metrics = _wait_scored(dep, len(X))
    classes = model.classes_.tolist()
    expected = roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=classes)
    assert metrics["auc"] == pytest.approx(expected, abs=1e-12)
    assert metrics["log_loss"] == pytest.approx(log_loss(labels, proba, labels=classes), abs=1e-12)
    assert metrics["positive_class"] is None and metrics["classes"] == classes


@pytest.mark.slow
def test_latency_of_one_row_predict_proba_against_predict(models, capsys):
    """A figure for the report: one-row requests, median over 200 each (not a pass/fail bound beyond sanity)."""
    X, dep = models["X"], models["deps"]["rf"]
    row = X[:1]
    timings: dict[str, float] = {}
    for name, call in [("predict", dep.predict), ("predict_proba", dep.predict_proba)]:
        for _ in range(20):
            call(row)
        samples = []
        for _ in range(200):
            t0 = time.perf_counter()
            call(row)
            samples.append(time.perf_counter() - t0)
        timings[name] = float(np.median(samples)) * 1000
    with capsys.disabled():
        print(f"\none-row median latency (ms): {timings}")
    assert timings["predict_proba"] < 3 * timings["predict"] + 5
