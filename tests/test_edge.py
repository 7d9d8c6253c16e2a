"""The edge target: ONNX export with a parity check, clear refusals, and a server needing only onnxruntime."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import auth, notebook
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

import nbdeploy
from nbdeploy.edge import ATOL, RTOL, EdgeBundle
from nbdeploy.edge.server import EdgeModel
from nbdeploy.targets import _process
from nbdeploy.wire import payload

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")

NUMERIC = ["tenure", "monthly", "support_calls"]
FORBIDDEN = {"sklearn", "pandas", "bentoml", "cloudpickle", "nbdeploy", "skl2onnx", "lightgbm", "xgboost"}

pytestmark = pytest.mark.heavy  # ONNX conversions and parity checks take seconds


def churn() -> tuple[pd.DataFrame, pd.Series]:
    """1000 customers and whether they left (also the data of test_edge_hardening)."""
    rng = np.random.default_rng(7)
    n = 1000
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "monthly": rng.normal(70, 20, n).round(2),
            "support_calls": rng.poisson(2, n),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "region": rng.choice(["north", "south", "east", "west"], n),
        }
    )
    y = (X.support_calls > 2) & (X.tenure < 24) | (X.monthly > 95) | (X.plan == "pro") & (X.region == "east")
    return X, y.astype(int)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    return churn()


def _columns() -> ColumnTransformer:
    return ColumnTransformer(
        [("num", StandardScaler(), NUMERIC), ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"])]
    )


def _model(kind: str, X: pd.DataFrame, y: pd.Series):  # type: ignore[no-untyped-def]
    Xn = X[NUMERIC].astype("float64")
    if kind == "columns+logreg":
        return Pipeline([("prep", _columns()), ("clf", LogisticRegression(max_iter=500))]).fit(X, y), X
    if kind == "random-forest":
        return RandomForestClassifier(n_estimators=30, max_depth=8, random_state=0).fit(Xn, y), Xn
    if kind == "gradient-boosting":
        return GradientBoostingClassifier(n_estimators=50, random_state=0).fit(Xn, y), Xn
    if kind == "gb-regressor":
        return GradientBoostingRegressor(n_estimators=50, random_state=0).fit(Xn, X["monthly"]), Xn
    if kind == "columns+lightgbm":
        lightgbm = pytest.importorskip("lightgbm")
        clf = lightgbm.LGBMClassifier(n_estimators=40, verbose=-1, random_state=0)
        return Pipeline([("prep", _columns()), ("clf", clf)]).fit(X, y), X
    if kind == "xgboost":
        xgboost = pytest.importorskip("xgboost")
        return xgboost.XGBClassifier(n_estimators=40, max_depth=4).fit(Xn, y), Xn
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["columns+logreg", "random-forest", "gradient-boosting", "gb-regressor", "columns+lightgbm", "xgboost"],
)
def test_export_passes_parity_on_1000_rows(kind, data, tmp_path):
    model, sample = _model(kind, *data)
    bundle = nbdeploy.export_edge(model, tmp_path / "b", sample=sample)
    assert bundle.rows_checked == 1000
    assert bundle.max_difference < 1e-3
    print(f"{kind}: max |difference| {bundle.max_difference:.3g}, bundle {bundle.size_bytes} bytes")
    names = {p.name for p in bundle.path.iterdir()}
    assert {"model.onnx", "schema.json", "manifest.json", "server.py", "requirements.txt"} <= names
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    assert bundle.manifest_sha256 == hashlib.sha256((bundle.path / "manifest.json").read_bytes()).hexdigest()
    assert bundle.manifest_sha256 in bundle.instructions
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((bundle.path / name).read_bytes()).hexdigest() == digest
    assert manifest["parity"]["rtol"] == RTOL and manifest["parity"]["atol"] == ATOL
    assert manifest["runtime"]["precision"] == "float32" and manifest["lineage"]["python"]
    # the bundle's own server code, on rows it has not seen in this order
    edge = EdgeModel(bundle.path)
    rows = sample.iloc[::-7][:50]
    got = np.asarray(edge.predict(payload(rows)["inputs"]))
    want = model.predict(rows)
    if kind == "gb-regressor":
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    else:
        np.testing.assert_array_equal(got, want)


def test_nested_pipeline_passthrough_columns_and_bool_classes(data, tmp_path):
    X, y = data
    columns = ColumnTransformer([("cat", OneHotEncoder(), ["plan", "region"])], remainder="passthrough")
    inner = Pipeline([("columns", columns)])
    model = Pipeline([("prep", inner), ("rf", RandomForestClassifier(n_estimators=10, random_state=0))])
    model.fit(X, y.astype(bool))
    bundle = nbdeploy.export_edge(model, tmp_path / "b", sample=X)
    got = EdgeModel(bundle.path).predict(payload(X[:20])["inputs"])
    assert got == model.predict(X[:20]).tolist() and isinstance(got[0], bool)


def test_notebook_defined_transformer_is_refused_naming_the_step(data, tmp_path):
    X, y = data
    ns = notebook(
        """
        from sklearn.base import BaseEstimator, TransformerMixin

        class CallsPerYear(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                return self
            def transform(self, X):
                out = X[["tenure", "monthly", "support_calls"]].astype(float).copy()
                out["calls_per_year"] = X["support_calls"] / (1 + X["tenure"] / 12)
                return out
        """
    )
    model = Pipeline([("features", ns["CallsPerYear"]()), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
    with pytest.raises(nbdeploy.EdgeExportError, match=r"step 'features' \(CallsPerYear\).*notebook") as err:
        nbdeploy.export_edge(model, tmp_path / "b", sample=X)
    assert "target='local'" in str(err.value.hint) and "container" in str(err.value.hint)
    assert not (tmp_path / "b").exists()


def test_function_transformer_and_plain_function_are_refused(data, tmp_path):
    X, y = data
    ns = notebook("def log_calls(X):\n    return X.assign(support_calls=X['support_calls'] + 1)\n")
    model = Pipeline([("log", FunctionTransformer(ns["log_calls"])), ("clf", LogisticRegression())])
    model.fit(X[NUMERIC], y)
    with pytest.raises(nbdeploy.EdgeExportError, match=r"step 'log' \(FunctionTransformer\).*log_calls"):
        nbdeploy.export_edge(model, tmp_path / "b", sample=X[NUMERIC])
    with pytest.raises(nbdeploy.EdgeExportError, match=r"'log_calls' \(function\)"):
        nbdeploy.export_edge(ns["log_calls"], tmp_path / "b", sample=X[NUMERIC])


def test_parity_failure_names_the_step_and_the_difference(data, tmp_path):
    from nbdeploy.edge import export_edge

    model, sample = _model("gb-regressor", *data)
    model = Pipeline([("scale", StandardScaler()), ("gbr", model)]).fit(sample, data[0]["monthly"])
    with pytest.raises(nbdeploy.EdgeExportError, match=r"step 'gbr' \(GradientBoostingRegressor\).*differs.*by up to"):
        export_edge(model, tmp_path / "b", sample, rtol=0.0, atol=0.0)
    assert not (tmp_path / "b").exists()


def test_server_refuses_a_modified_model_and_imports_only_onnxruntime_numpy_stdlib(data, tmp_path):
    model, sample = _model("gradient-boosting", *data)
    bundle = nbdeploy.export_edge(model, tmp_path / "b", sample=sample)
    tree = ast.parse((bundle.path / "server.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & FORBIDDEN
    assert imported - {"__future__"} <= set(sys.stdlib_module_names) | {"numpy", "onnxruntime"}
    with open(bundle.path / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(RuntimeError, match=r"model\.onnx has been modified"):
        EdgeModel(bundle.path)


def test_an_existing_folder_that_is_not_a_bundle_is_not_replaced(data, tmp_path):
    model, sample = _model("gradient-boosting", *data)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(nbdeploy.EdgeExportError, match="not an edge bundle"):
        nbdeploy.export_edge(model, tmp_path / "b", sample=sample)
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"
    nbdeploy.export_edge(model, tmp_path / "c", sample=sample)
    nbdeploy.export_edge(model, tmp_path / "c", sample=sample)  # a bundle is replaced by a new export


def test_quantize_shrinks_weight_matrices_and_refuses_trees(tmp_path):
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(1000, 20)), columns=[f"x{i}" for i in range(20)])
    y = (X.x0 + X.x1 * X.x2 > 0).astype(int)
    mlp = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier((128, 128), max_iter=200, random_state=0))])
    mlp.fit(X, y)
    plain = nbdeploy.export_edge(mlp, tmp_path / "f", sample=X)
    small = nbdeploy.export_edge(mlp, tmp_path / "q", sample=X, quantize=True)
    sizes = small.manifest["size_bytes"]
    assert small.quantized and sizes["model.onnx"] < sizes["model.onnx (float32)"] / 2
    assert small.max_difference > plain.max_difference and small.manifest["parity"]["class_agreement"] >= 0.99
    print(f"quantised MLP: {sizes}, max |difference| {small.max_difference:.3g} (float32: {plain.max_difference:.3g})")
    rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    with pytest.raises(nbdeploy.EdgeExportError, match="nothing to quantise"):
        nbdeploy.export_edge(rf, tmp_path / "r", sample=X, quantize=True)


# ---- serving: real processes over HTTP ----


@pytest.fixture(scope="session")
def onnx_only_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv holding onnxruntime and numpy and nothing else (scikit-learn must not import there)."""
    import onnxruntime

    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed beside this Python")
    env_dir = tmp_path_factory.mktemp("onnx-only") / "venv"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(env_dir)], check=True, timeout=120)
    python = str(env_dir / "bin" / "python")
    req = [f"onnxruntime=={onnxruntime.__version__}", "numpy"]
    subprocess.run([str(uv), "pip", "install", "-q", "--python", python, *req], check=True, timeout=300)
    probe = subprocess.run([python, "-c", "import sklearn"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'sklearn'" in probe.stderr
    return python


def _serve(python: str, bundle: EdgeBundle, env: dict[str, str]) -> tuple[int, str]:
    """Start the bundle's server as a deployment does (-I, the manifest sha256 from the export); wait for it."""
    port = _process.free_port()
    log = bundle.path.parent / "server.log"
    cmd = [python, "-I", str(bundle.path / "server.py"), "--port", str(port)]
    env = {"PATH": os.environ["PATH"], "NBDEPLOY_MANIFEST_SHA256": bundle.manifest_sha256, **env}
    pid = _process.spawn(cmd, log, env, cwd=bundle.path.parent)
    url = f"http://127.0.0.1:{port}"
    from nbdeploy.targets.base import wait_ready

    try:
        assert wait_ready(url, lambda: _process.is_alive(pid, str(bundle.path)), 60), _process.tail(log, 30)
    except BaseException:
        _process.stop_group(pid, str(bundle.path))
        raise
    return pid, url


@pytest.mark.slow
def test_bundle_serves_over_http_without_scikit_learn(data, tmp_path, onnx_only_python):
    model, sample = _model("columns+logreg", *data)
    bundle = nbdeploy.export_edge(model, tmp_path / "churn.edge", sample=sample)
    key = "nbd_test-key"
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"sha256": [hashlib.sha256(key.encode()).hexdigest()]}))
    pid, url = _serve(onnx_only_python, bundle, {"NBDEPLOY_KEYS_FILE": str(keys_file)})
    try:
        headers = {"authorization": f"Bearer {key}"}
        with httpx.Client(trust_env=False, timeout=30) as http:
            resp = http.post(f"{url}/predict", json=payload(sample), headers=headers)
            assert resp.status_code == 200, resp.text
            np.testing.assert_array_equal(resp.json()["predictions"], model.predict(sample))
            records = sample[:3].to_dict(orient="records")
            resp = http.post(f"{url}/predict", json={"inputs": records}, headers={"x-api-key": key})
            assert resp.json()["predictions"] == model.predict(sample[:3]).tolist()
            missing = [{k: v for k, v in r.items() if k != "plan"} for r in records]
            resp = http.post(f"{url}/predict", json={"inputs": missing}, headers=headers)
            assert resp.status_code == 400 and "missing column 'plan'" in resp.json()["error"]
            wrong = [{**records[0], "monthly": "lots"}]
            resp = http.post(f"{url}/predict", json={"inputs": wrong}, headers=headers)
            assert resp.status_code == 400 and "column 'monthly'" in resp.json()["error"]
            assert http.post(f"{url}/predict", json={"inputs": records}).status_code == 401
            bad = {"authorization": "Bearer nbd_wrong"}
            assert http.post(f"{url}/predict", json={"inputs": records}, headers=bad).status_code == 401
            assert http.get(f"{url}/livez").status_code == 200
    finally:
        _process.stop_group(pid, str(bundle.path))
    assert not _process.members(pid, str(bundle.path))


@pytest.mark.slow
def test_edge_target_deploys_with_the_same_handle(data, stop_after, monkeypatch, onnx_only_python, tmp_path):
    model, sample = _model("columns+logreg", *data)
    monkeypatch.setenv("NBDEPLOY_EDGE_PYTHON", onnx_only_python)
    dep = nbdeploy.deploy(model, name="edge-churn", sample=sample, target="edge")
    stop_after(dep)
    assert dep.target == "edge" and dep.status() == "running"
    np.testing.assert_array_equal(dep.predict(sample[:200]), model.predict(sample[:200]))
    resp = httpx.post(f"{dep.url}/predict", json={"inputs": [{"tenure": 3}]}, headers=auth(dep), trust_env=False)
    assert resp.status_code == 400 and "missing column 'monthly'" in resp.json()["error"]
    assert httpx.post(f"{dep.url}/predict", json={"inputs": []}, trust_env=False).status_code == 401
    assert "serving" in dep.logs()
    info = dep.info()
    assert info["edge"]["max_abs_difference"] < 1e-3 and Path(info["edge"]["bundle"], "model.onnx").exists()
    manifest = Path(info["edge"]["bundle"], "manifest.json").read_bytes()
    assert info["edge"]["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    from nbdeploy import cli

    assert cli.main(["export-edge", "edge-churn", str(tmp_path / "cli.edge")]) == 0
    assert json.loads((tmp_path / "cli.edge" / "manifest.json").read_text())["parity"]["rows"] == 1000
    assert dep.export_edge(str(tmp_path / "handle.edge")).max_difference < 1e-3
    # the magic, as a notebook runs it: v2 replaces v1 once it is ready
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbdeploy")
    shell.user_ns.update(model=model, X_train=sample)
    result = shell.run_cell("dep2 = %deploy model --name edge-churn --sample X_train --target edge --force")
    assert result.error_in_exec is None, result.error_in_exec
    dep2 = shell.user_ns["dep2"]
    stop_after(dep2)
    assert dep2.version == 2 and dep2.target == "edge" and dep.status() == "stopped"
    assert not _process.members(0, str(Path(info["edge"]["bundle"], "server.py")))
    np.testing.assert_array_equal(dep2.predict(sample[-50:]), model.predict(sample[-50:]))
    dep2.stop()
    assert dep2.status() == "stopped"
    assert not _process.members(0, str(Path(dep2.info()["edge"]["bundle"], "server.py")))


def test_edge_target_refuses_a_notebook_function_before_serving(data, monkeypatch):
    X, _ = data
    ns = notebook("def score(df):\n    return df['monthly'] * 2\n")
    with pytest.raises(nbdeploy.EdgeExportError, match=r"'score' \(function\)"):
        nbdeploy.deploy(ns["score"], name="edge-fn", sample=X[NUMERIC], target="edge")
    assert nbdeploy.get("edge-fn", 1).status() == "failed"


@pytest.mark.slow
def test_container_image_serves_the_bundle(data, tmp_path):
    from nbdeploy.edge import build_image
    from nbdeploy.errors import TargetError
    from nbdeploy.targets import _baseimage
    from nbdeploy.targets._engine import find_engine

    try:
        engine = find_engine()
        _baseimage.resolve(engine, _baseimage.configured())
    except TargetError as exc:
        pytest.skip(f"no container engine or base image here: {exc}")
    model, sample = _model("columns+logreg", *data)
    bundle = nbdeploy.export_edge(model, tmp_path / "churn.edge", sample=sample)
    tag = f"localhost/nbdeploy-edge-test:{tmp_path.name[-12:].lower()}"
    name = f"nbdeploy-edge-test-{os.getpid()}"
    key = "nbd_container-key"
    (tmp_path / "keys.json").write_text(json.dumps({"sha256": [hashlib.sha256(key.encode()).hexdigest()]}))
    (tmp_path / "keys.json").chmod(0o644)
    try:
        image = build_image(bundle.path, tag, engine=engine.name, manifest_sha256=bundle.manifest_sha256)
        assert image.manifest_sha256 == bundle.manifest_sha256
        base_size = int(engine.run(["image", "inspect", "--format", "{{.Size}}", _baseimage.configured()]).stdout)
        print(f"edge image {image.size_bytes} bytes on a base of {base_size} bytes")
        port = _process.free_port()
        mount = f"{tmp_path / 'keys.json'}:/keys.json:ro"
        engine.run(
            ["run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-v", mount,
             "-e", "NBDEPLOY_KEYS_FILE=/keys.json", tag]
        )  # fmt: skip
        from nbdeploy.targets.base import wait_ready

        url = f"http://127.0.0.1:{port}"
        assert wait_ready(url, lambda: engine.container_state(name) is not None, 60), engine.run(["logs", name]).stderr
        with httpx.Client(trust_env=False, timeout=30) as http:
            resp = http.post(f"{url}/predict", json=payload(sample[:50]), headers={"x-api-key": key})
            assert resp.status_code == 200, resp.text
            np.testing.assert_array_equal(resp.json()["predictions"], model.predict(sample[:50]))
            assert http.post(f"{url}/predict", json=payload(sample[:5])).status_code == 401
    finally:
        engine.run(["rm", "-f", name], check=False, timeout=60)
        engine.run(["rmi", "-f", tag], check=False, timeout=60)
