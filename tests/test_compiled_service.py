"""The compiled path in real services: chosen at deploy, rechecked at load, said on the card; Python where it is not.

One forest is deployed for the module (compiled by default). Its answers over HTTP equal the session's bit for bit;
a compiled file changed after deploy makes the restarted service serve Python, and say why in its log.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import notebook
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import nbdeploy
from nbdeploy.card import serving_line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(3000, 6)), columns=[f"f{i}" for i in range(6)])
    y = ((X.f0 + X.f1 * X.f2) > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def forest(data: tuple[pd.DataFrame, pd.Series]):
    X, y = data
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X[:2000], y[:2000])
    dep = nbdeploy.deploy(model, name="compiled-rf", sample=X[:2000])
    try:
        yield model, dep
    finally:
        nbdeploy.get("compiled-rf").stop()


def _said(dep: nbdeploy.Deployment) -> list[str]:
    return [line for line in dep.logs(lines=400).splitlines() if line.startswith("nbdeploy: ")]


def test_the_forest_serves_compiled_and_answers_as_the_session(forest, data) -> None:
    model, dep = forest
    X, _ = data
    compiled = dep.info()["compiled"]
    assert compiled["path"] == "onnx" and compiled["requested"] and compiled["reason"] is None
    parity = compiled["parity"]
    assert parity["classes_equal"] and parity["generated_rows"] > 0 and parity["max_rel_diff"] <= parity["rtol"]
    assert compiled["one_row_us"]["compiled"] < 0.3 * compiled["one_row_us"]["python"]
    assert any("serving the compiled model" in line for line in _said(dep))
    held_out = X[2000:]
    np.testing.assert_array_equal(dep.predict(held_out), model.predict(held_out))
    np.testing.assert_array_equal(dep.predict_proba(held_out), model.predict_proba(held_out))  # bit for bit
    for i in range(20):  # one row at a time: the path that is compiled for latency
        np.testing.assert_array_equal(dep.predict_proba(held_out[i : i + 1]), model.predict_proba(held_out[i : i + 1]))
    line = serving_line(compiled) or ""
    assert line.startswith("compiled: onnxruntime") and "parity on" in line and "classes identical" in line
    assert "Serving" in dep._repr_html_() and "parity on" in dep._repr_html_()


def test_a_compiled_file_changed_after_deploy_is_not_served(forest, data) -> None:
    model, dep = forest
    X, _ = data
    tables = Path(str(dep.record.bento_path)) / "src" / "artifact" / "compiled" / "tables.npz"
    assert tables.is_file(), tables
    original = tables.read_bytes()
    with np.load(tables) as t:
        arrays = {k: t[k] for k in t.files}
    arrays["values"] = arrays["values"][::-1].copy()  # leaf values reordered: well-formed, but other answers
    try:
        with tables.open("wb") as f:
            np.savez(f, **arrays)
        again = dep.restart()
        said = _said(again)[-4:]
        assert any("serving the Python model" in line and "differs from the compiled manifest" in line for line in said)
        np.testing.assert_array_equal(again.predict(X[2000:2300]), model.predict(X[2000:2300]))
    finally:
        tables.write_bytes(original)
    back = nbdeploy.get("compiled-rf").restart()
    assert any("serving the compiled model" in line for line in _said(back)[-4:])


def test_a_step_onnx_cannot_express_serves_python_with_the_reason(data, stop_after) -> None:
    X, y = data
    tidy = notebook("def tidy(df):\n    return df.clip(-3, 3)\n")["tidy"]
    model = Pipeline([("clean", FunctionTransformer(tidy)), ("m", RandomForestClassifier(5, random_state=0))])
    model.fit(X[:500], y[:500])
    dep = nbdeploy.deploy(model, name="compiled-fallback", sample=X[:500])
    stop_after(dep)
    compiled = dep.info()["compiled"]
    assert compiled["path"] == "python" and "'clean'" in compiled["reason"] and "tidy()" in compiled["reason"]
    assert (serving_line(compiled) or "").startswith("the Python object (step 'clean'")
    np.testing.assert_array_equal(dep.predict(X[500:700]), model.predict(X[500:700]))
    off = nbdeploy.deploy(model, name="compiled-off", sample=X[:500], compile=False)
    stop_after(off)
    assert off.info()["compiled"] == {"requested": False, "path": "python", "reason": "compile=False"}
