"""The spine, end to end with real `bentoml serve` processes over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import numpy as np
import pytest
from conftest import CHURN_PIPELINE, auth, notebook
from sklearn.ensemble import RandomForestClassifier

import nbdeploy
from nbdeploy.targets import _process

pytestmark = pytest.mark.slow


def test_notebook_function_predicts_like_the_session(churn_data, stop_after):
    X, _ = churn_data
    ns = notebook(
        """
        import numpy as np
        WEIGHT = 0.1
        def score(df):
            return np.round(df["monthly"] * WEIGHT + df["support_calls"] ** 2 / (1 + df["tenure"]), 6)
        """
    )
    dep = nbdeploy.deploy(ns["score"], name="fn-score", sample=X)
    stop_after(dep)
    expected = ns["score"](X[:100]).to_numpy()
    got = dep.predict(X[:100])
    assert got.shape == (100,)
    np.testing.assert_array_equal(got, expected)  # exact: floats travel bit-for-bit through JSON
    assert dep.info()["kind"] == "function"


def test_pipeline_with_notebook_transformer(churn_data, stop_after):
    X, y = churn_data
    ns = notebook(CHURN_PIPELINE)
    model = ns["build"](X[:500], y[:500])
    assert type(model.steps[0][1]).__module__ == "__main__"
    dep = nbdeploy.deploy(model, name="pipe", sample=X[:500])
    stop_after(dep)
    np.testing.assert_array_equal(dep.predict(X[500:600]), model.predict(X[500:600]))
    reqs = {r.partition("==")[0]: r.partition("==")[2] for r in dep.info()["requirements"]}
    import sklearn

    assert reqs["scikit-learn"] == sklearn.__version__


def test_random_forest_and_array_input(churn_data, stop_after):
    X, y = churn_data
    num = X[["tenure", "monthly", "support_calls"]]
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(num[:500], y[:500])
    dep = nbdeploy.deploy(model, name="rf", sample=num[:500])
    stop_after(dep)
    np.testing.assert_array_equal(dep.predict(num[500:600]), model.predict(num[500:600]))
    # records (list of dicts) give the same answer as the split form
    records = num[500:510].to_dict(orient="records")
    np.testing.assert_array_equal(dep.predict(records), model.predict(num[500:510]))

    arr_model = RandomForestClassifier(n_estimators=10, random_state=0).fit(num.to_numpy()[:500], y[:500])
    dep2 = nbdeploy.deploy(arr_model, name="rf-array", sample=num.to_numpy()[:500])
    stop_after(dep2)
    np.testing.assert_array_equal(dep2.predict(num.to_numpy()[500:600]), arr_model.predict(num.to_numpy()[500:600]))


@pytest.fixture(scope="module")
def served(churn_data):
    X, _y = churn_data
    num = X[["tenure", "monthly", "support_calls", "plan"]]
    ns = notebook(
        """
        def model(df):
            return (df["monthly"] > 70).astype(int) + (df["plan"] == "pro").astype(int)
        """
    )
    dep = nbdeploy.deploy(ns["model"], name="bad-inputs", sample=num)
    yield dep
    dep.stop()


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"inputs": [{"tenure": 1, "monthly": 3.0, "plan": "pro"}]}, "missing column 'support_calls'"),
        ({"inputs": [{"tenure": 1, "monthly": 3.0, "support_calls": 1, "plan": "pro", "x": 2}]}, "unknown column 'x'"),
        ({"inputs": [{"tenure": 1, "monthly": "lots", "support_calls": 1, "plan": "pro"}]}, "column 'monthly'"),
        ({"inputs": [{"tenure": 1.5, "monthly": 2.0, "support_calls": 1, "plan": "pro"}]}, "column 'tenure'"),
        ({"inputs": [{"tenure": 1, "monthly": 2.0, "support_calls": 1, "plan": 7}]}, "column 'plan'"),
        ({"inputs": {"columns": ["tenure", "monthly"], "data": [[1, 2.0]]}}, "missing column 'support_calls'"),
        ({"inputs": []}, "empty"),
        ({"rows": []}, "inputs"),
    ],
)
def test_bad_input_gets_400_naming_the_problem(served, body, needle):
    resp = httpx.post(f"{served.url}/predict", json=body, headers=auth(served))
    assert resp.status_code == 400, resp.text
    assert needle in resp.text


@pytest.mark.parametrize("raw", [b"", b'{"inputs": [', b"not json"])
def test_empty_or_malformed_body_gets_400(served, raw):
    resp = httpx.post(
        f"{served.url}/predict", content=raw, headers={"content-type": "application/json", **auth(served)}
    )
    assert resp.status_code == 400
    assert "inputs" in resp.text or "JSON" in resp.text
    # and the service keeps serving
    ok = httpx.post(
        f"{served.url}/predict",
        json={"inputs": [{"tenure": 1, "monthly": 80.0, "support_calls": 1, "plan": "pro"}]},
        headers=auth(served),
    )
    assert ok.status_code == 200 and ok.json()["predictions"] == [2]


def test_predict_raises_package_error_on_400(served):
    with pytest.raises(nbdeploy.PredictionError, match="missing column 'plan'") as info:
        served.predict([{"tenure": 1, "monthly": 80.0, "support_calls": 1}])
    assert info.value.status == 400


def test_health_and_metrics_endpoints(served):
    assert httpx.get(f"{served.url}/livez").status_code == 200
    assert httpx.get(f"{served.url}/readyz").status_code == 200
    metrics = httpx.get(f"{served.url}/metrics").text
    assert "bentoml_service_request_total" in metrics


DEPLOYER = textwrap.dedent(
    """
    import sys, numpy as np, pandas as pd, nbdeploy
    X = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) % 7})
    def model(df):
        return df["a"] * 2 + df["b"]
    dep = nbdeploy.deploy(model, name="survivor", sample=X)
    print(dep.url, dep.version, flush=True)
    sys.stdin.read()  # stay alive until the test kills us, like a kernel waiting for input
    """
)

PREDICTOR = textwrap.dedent(
    """
    import json, pandas as pd, nbdeploy
    dep = nbdeploy.get("survivor")
    print(json.dumps({"url": dep.url, "status": dep.status(),
                      "pred": dep.predict(pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 0.0]})).tolist()}))
    """
)


def test_deployment_outlives_the_kernel_that_made_it():
    env = dict(os.environ)
    kernel = subprocess.Popen(
        [sys.executable, "-c", DEPLOYER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = kernel.stdout.readline().split()
        assert line, "the deploying process printed nothing"
        url = line[0]
        kernel.send_signal(signal.SIGKILL)  # the kernel dies hard, as on a restart
        kernel.wait(timeout=10)
        out = subprocess.run(
            [sys.executable, "-c", PREDICTOR], capture_output=True, text=True, env=env, timeout=120, check=True
        )
        result = json.loads(out.stdout)
        assert result == {"url": url, "status": "running", "pred": [5.0, 4.0]}
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait()
        dep = nbdeploy.get("survivor")
        dep.stop()
    assert dep.status() == "stopped"


def test_redeploy_makes_v2_and_rollback_serves_v1(churn_data):
    X, _ = churn_data
    num = X[["tenure", "monthly"]]
    v1_fn = notebook("def f(df):\n    return df['tenure'] * 1.0\n")["f"]
    v2_fn = notebook("def f(df):\n    return df['tenure'] * 2.0\n")["f"]
    try:
        d1 = nbdeploy.deploy(v1_fn, name="versions", sample=num)
        pid1, bento1 = d1._record.pid, d1._record.bento_path
        d2 = nbdeploy.deploy(v2_fn, name="versions", sample=num)
        assert (d1.version, d2.version) == (1, 2)
        assert not _process.members(pid1, bento1), "version 1's processes must be gone"
        assert d1.status() == "stopped"
        current = nbdeploy.get("versions")
        assert current.version == 2
        np.testing.assert_array_equal(current.predict(num[:20]), num["tenure"][:20] * 2.0)

        back = nbdeploy.rollback("versions", 1)
        assert back.version == 1 and nbdeploy.get("versions").version == 1
        np.testing.assert_array_equal(nbdeploy.get("versions").predict(num[:20]), num["tenure"][:20] * 1.0)
        assert nbdeploy.get("versions", 2).status() == "stopped"
        table = nbdeploy.deployments(all_versions=True)
        rows = table[table.name == "versions"].set_index("version")["status"].to_dict()
        assert rows == {1: "running", 2: "stopped"}
    finally:
        for rec in nbdeploy.deployments(all_versions=True).itertuples():
            if rec.name == "versions" and rec.status == "running":
                nbdeploy.get("versions", rec.version).stop()
    assert not [p for p, cmd in _leftovers("nbdeploy-versions")]


def _leftovers(marker: str) -> list[tuple[int, str]]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _process.is_alive(int(entry.name), marker):
            out.append((int(entry.name), _process.cmdline(int(entry.name))))
    return out


def test_stop_leaves_no_process(churn_data):
    X, _ = churn_data
    dep = nbdeploy.deploy(notebook("def f(df):\n    return df['tenure']\n")["f"], name="stopper", sample=X)
    pid = dep._record.pid
    bento = dep._record.bento_path
    assert len(_process.members(pid, bento)) >= 2  # the server and its worker
    dep.stop()
    assert _process.members(pid, bento) == []
    assert dep.status() == "stopped"
    with pytest.raises(nbdeploy.PredictionError):
        dep.predict(X[:1])


def test_port_in_use_is_a_clear_error(churn_data, stop_after):
    X, _ = churn_data
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(nbdeploy.TargetError, match=f"port {port} is in use"):
            nbdeploy.deploy(notebook("def f(df):\n    return df['tenure']\n")["f"], name="busy", sample=X, port=port)
    assert "busy" not in set(nbdeploy.deployments()["name"])


def test_access_log_is_off_unless_asked_for(churn_data, stop_after, monkeypatch):
    """BentoML's line per request costs throughput (the request log has them all); NBDEPLOY_ACCESS_LOG=1 restores it."""
    X, _ = churn_data
    fn = notebook("def f(df):\n    return df['tenure'] * 1.0\n")["f"]
    quiet = nbdeploy.deploy(fn, name="quiet-log", sample=X)
    stop_after(quiet)
    monkeypatch.setenv("NBDEPLOY_ACCESS_LOG", "1")
    loud = nbdeploy.deploy(fn, name="loud-log", sample=X)
    stop_after(loud)
    for dep in (quiet, loud):
        dep.predict(X[:2])
    deadline = time.monotonic() + 10
    while "path=/predict" not in loud.logs(100) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "path=/predict" in loud.logs(100)
    assert "path=/predict" not in quiet.logs(100)
