"""The compiled inference path (#20): each family compiles and answers as the Python model does on 10,000 fresh
rows (classes exactly, scores within the stated tolerance), what cannot compile falls back naming the step, a
float32 compile that would flip a class is caught, and the service's recheck notices a swapped compiled model."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import nbdeploy.compile as compile_mod
from nbdeploy.capture.schema import infer_schema
from nbdeploy.compile import _compile, compile_model, held_out
from nbdeploy.runtime.compiled import COMPILED_DIR, MANIFEST, TABLES, CompiledError, load_compiled, recheck
from nbdeploy.runtime.model import methods_of

pytestmark = pytest.mark.heavy
CITIES = ["paris", "rome", "oslo", "lima"]


@pytest.fixture(autouse=True)
def quick_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer timed calls than a deploy makes: the tests check answers, the bench checks speed."""
    monkeypatch.setattr(compile_mod, "TIMED_CALLS", 60)
    monkeypatch.setattr(compile_mod, "TIMING_BUDGET_S", 0.2)
    monkeypatch.setattr(compile_mod, "LARGE_ROWS", 2000)


def _data(n: int, seed: int, *, city: bool = False, nan: bool = False) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"f{i}" for i in range(6)])
    margin = X.f0 + X.f1 * X.f2 - 0.5 * X.f3
    if city:
        X["city"] = rng.choice(CITIES, n)
        margin = margin + (X.city == "rome") - (X.city == "oslo")
    if nan:
        X.loc[rng.random(n) < 0.1, "f0"] = np.nan
    return X, np.digitize(margin, [-0.7, 0.7]), (margin + 0.1 * rng.normal(size=n)).to_numpy()


def _column_transformer() -> Pipeline:
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), [f"f{i}" for i in range(6)]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))])


def _lightgbm() -> Any:
    return pytest.importorskip("lightgbm").LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1)


def _xgboost() -> Any:
    return pytest.importorskip("xgboost").XGBClassifier(n_estimators=30, max_depth=4)


# name -> (factory, target, data options); the speed target (one row at most 0.3x Python) is checked for "fast"
FAMILIES: dict[str, tuple[Any, str, dict[str, bool]]] = {
    "random_forest": (lambda: RandomForestClassifier(30, random_state=0), "class", {}),
    "extra_trees": (lambda: ExtraTreesClassifier(30, random_state=0), "class", {}),
    "gradient_boosting": (lambda: GradientBoostingClassifier(n_estimators=30, random_state=0), "class", {}),
    "gradient_boosting_binary": (lambda: GradientBoostingClassifier(n_estimators=30, random_state=0), "binary", {}),
    "gradient_boosting_regressor": (lambda: GradientBoostingRegressor(n_estimators=30, random_state=0), "value", {}),
    "hist_gradient_boosting_nan": (lambda: HistGradientBoostingClassifier(max_iter=30), "class", {"nan": True}),
    "decision_tree": (lambda: DecisionTreeClassifier(random_state=0), "class", {}),
    "decision_tree_regressor": (lambda: DecisionTreeRegressor(max_depth=8, random_state=0), "value", {}),
    "random_forest_regressor": (lambda: RandomForestRegressor(20, max_depth=10, random_state=0), "value", {}),
    "hist_gradient_boosting_regressor": (lambda: HistGradientBoostingRegressor(max_iter=30), "value", {}),
    "scaler_logistic": (lambda: make_pipeline(StandardScaler(), LogisticRegression()), "class", {}),
    "scaler_logistic_binary": (lambda: make_pipeline(StandardScaler(), LogisticRegression()), "binary", {}),
    "ridge": (lambda: Ridge(), "value", {}),
    "linear_regression": (lambda: LinearRegression(), "value", {}),
    "column_transformer_onehot": (_column_transformer, "class", {"city": True}),
    "lightgbm": (_lightgbm, "class", {}),
    "xgboost": (_xgboost, "class", {}),
}
FAST = ("random_forest", "gradient_boosting", "scaler_logistic")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_compiles_and_answers_as_python_on_10k_rows(name: str, tmp_path: Path) -> None:
    factory, target, options = FAMILIES[name]
    X, y, value = _data(1500, 0, **options)
    model = factory().fit(X, value if target == "value" else y % 2 if target == "binary" else y)
    record = compile_model(model, X, infer_schema(X, model), "estimator", tmp_path)
    assert record["path"] == "onnx", record["reason"]
    assert record["reason"] is None and record["parity"]["classes_equal"]
    assert record["parity"]["generated_rows"] > 0 and record["large_frame"] in ("compiled", "python")
    json.dumps(record)  # the record is JSON-able

    compiled = load_compiled(tmp_path)
    assert compiled is not None
    assert set(compiled.methods) == {"predict", *methods_of(model, "estimator")}
    fresh = _data(10_000, 1, **options)[0]
    tol = compiled.tolerance
    got, want = compiled.fns["predict"](fresh), model.predict(fresh)
    if target == "value":
        np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"])
    else:
        assert got.dtype == want.dtype and np.array_equal(got, want)
    for method in compiled.methods[1:]:
        np.testing.assert_allclose(
            compiled.fns[method](fresh), getattr(model, method)(fresh), rtol=tol["rtol"], atol=tol["atol"]
        )
    if name in FAST:
        us = record["one_row_us"]
        assert us["compiled"] <= 0.3 * us["python"], us


def test_string_labels_keep_their_dtype(tmp_path: Path) -> None:
    X, y, _ = _data(800, 0)
    labels = np.array(["low", "mid", "high"], dtype=object)[y]
    model = RandomForestClassifier(10, random_state=0).fit(X, labels)
    assert compile_model(model, X, infer_schema(X, model), "estimator", tmp_path)["path"] == "onnx"
    compiled = load_compiled(tmp_path)
    assert compiled is not None
    got, want = compiled.fns["predict"](X), model.predict(X)
    assert got.dtype == want.dtype == object and np.array_equal(got, want)


def tidy(frame: Any) -> Any:
    """A notebook-style cleaning function."""
    return frame * 2


class Doubler(TransformerMixin, BaseEstimator):
    """A notebook-style custom step."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X) * 2


@pytest.mark.parametrize(
    ("steps", "named"),
    [
        ([("clean", FunctionTransformer(tidy))], ["step 'clean'", "FunctionTransformer", "tidy()"]),
        ([("double", Doubler())], ["step 'double'", "Doubler"]),
        ([("fill", SimpleImputer())], ["step 'fill'", "SimpleImputer", "double"]),
    ],
)
def test_a_step_that_cannot_compile_falls_back_naming_it(steps: list, named: list[str], tmp_path: Path) -> None:
    X, y, _ = _data(500, 0)
    model = Pipeline([*steps, ("clf", LogisticRegression())]).fit(X, y)
    record = compile_model(model, X, infer_schema(X, model), "estimator", tmp_path)
    assert record["path"] == "python"
    for word in named:
        assert word in record["reason"]
    assert not (tmp_path / COMPILED_DIR).exists() and load_compiled(tmp_path) is None


def test_a_function_is_not_compiled(tmp_path: Path) -> None:
    X, _, _ = _data(100, 0)
    record = compile_model(tidy, X, infer_schema(X), "function", tmp_path)
    assert record["path"] == "python" and "function" in record["reason"]
    assert load_compiled(tmp_path) is None


def test_a_model_without_an_exact_form_falls_back(tmp_path: Path) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    X, y, _ = _data(300, 0)
    model = KNeighborsClassifier().fit(X, y)
    record = compile_model(model, X, infer_schema(X, model), "estimator", tmp_path)
    assert record["path"] == "python" and "KNeighborsClassifier" in record["reason"]


def _float32_trap() -> tuple[DecisionTreeClassifier, pd.DataFrame, pd.DataFrame, float]:
    """A tree whose split lies between two adjacent float32 values a < b, where a's last bit is odd: the
    threshold (a + b) / 2 rounds to b in float32, so a float32 compile sends x = b left where scikit-learn
    (float32(x) <= threshold in float64) sends it right. The sample given to compile holds no b."""
    a = np.nextafter(np.float32(16.0), np.float32(32.0))
    b = np.nextafter(a, np.float32(32.0))
    rng = np.random.default_rng(0)
    x = np.concatenate([np.full(40, a), np.full(40, b), rng.uniform(0, 8, 40), rng.uniform(20, 30, 40)])
    y = np.repeat([0, 1, 0, 1], 40)
    X = pd.DataFrame({"x": x.astype(np.float64), "z": rng.normal(size=len(x))})
    model = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y)
    t = float(model.tree_.threshold[0])
    assert t == (float(a) + float(b)) / 2 and np.float32(t) == b  # the trap is set
    return model, X, X[X.x != np.float64(b)], t


def test_float32_would_flip_a_class_and_is_caught(tmp_path: Path) -> None:
    model, _, sample, _ = _float32_trap()
    schema = infer_schema(sample, model)
    record = _compile(model, sample, schema, "estimator", tmp_path, precision="float32")
    assert record["path"] == "python"
    assert "predict gives 0 where Python gives 1" in record["reason"]
    assert "split threshold" in record["reason"]  # found by the generated rows: the sample has no such row
    assert load_compiled(tmp_path) is None


def test_double_compile_keeps_the_class_at_float32_neighbours(tmp_path: Path) -> None:
    model, X, sample, t = _float32_trap()
    record = compile_model(model, sample, infer_schema(sample, model), "estimator", tmp_path)
    assert record["path"] == "onnx", record["reason"]
    compiled = load_compiled(tmp_path)
    assert compiled is not None
    b = float(np.float32(t))
    edge = [np.nextafter(t, -np.inf), t, np.nextafter(t, np.inf), b, np.nextafter(b, -np.inf), np.nextafter(b, np.inf)]
    rows = pd.DataFrame({"x": edge, "z": 0.0})
    assert np.array_equal(compiled.fns["predict"](rows), model.predict(rows))
    assert np.array_equal(compiled.fns["predict"](X), model.predict(X))


def _compiled_forest(tmp_path: Path) -> tuple[RandomForestClassifier, pd.DataFrame, dict[str, Any]]:
    X, y, _ = _data(800, 0)
    model = RandomForestClassifier(10, random_state=0).fit(X, y)
    schema = infer_schema(X, model)
    record = compile_model(model, X, schema, "estimator", tmp_path)
    assert record["path"] == "onnx", record["reason"]
    return model, X, record | {"schema": schema}


def _fns(model: Any) -> dict[str, Any]:
    return {"predict": model.predict, "predict_proba": model.predict_proba}


def test_recheck_passes_on_the_stored_sample(tmp_path: Path) -> None:
    model, _, record = _compiled_forest(tmp_path)
    compiled = load_compiled(tmp_path, record["manifest_sha256"])
    assert compiled is not None
    figures = recheck(compiled, _fns(model), compiled.sample(record["schema"]))
    assert figures["ok"] and figures["reason"] is None and figures["rows"] > 0
    assert figures["classes_equal"] and figures["methods"] == ["predict", "predict_proba"]


def test_recheck_notices_another_model(tmp_path: Path) -> None:
    _, X, record = _compiled_forest(tmp_path)
    other = RandomForestClassifier(10, random_state=1).fit(X, (X.f0 > 0).astype(int) * 2)
    compiled = load_compiled(tmp_path)
    assert compiled is not None
    figures = recheck(compiled, _fns(other), compiled.sample(record["schema"]))
    assert not figures["ok"] and "where Python gives" in figures["reason"]


def test_a_tampered_compiled_model_is_refused_or_caught(tmp_path: Path) -> None:
    model, _, record = _compiled_forest(tmp_path)
    root = tmp_path / COMPILED_DIR
    tables = dict(np.load(root / TABLES, allow_pickle=False))
    tables["values"] = tables["values"][::-1].copy()  # every leaf answers another leaf's probabilities
    buf = io.BytesIO()
    np.savez(buf, **tables)
    (root / TABLES).write_bytes(buf.getvalue())
    with pytest.raises(CompiledError, match="differs from the compiled manifest"):
        load_compiled(tmp_path)
    # whoever rewrites the manifest too is caught by its trusted sha256, and without it by the recheck
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["files"][TABLES] = hashlib.sha256(buf.getvalue()).hexdigest()
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CompiledError, match="not the manifest written at deploy"):
        load_compiled(tmp_path, record["manifest_sha256"])
    compiled = load_compiled(tmp_path)
    assert compiled is not None
    assert not recheck(compiled, _fns(model), compiled.sample(record["schema"]))["ok"]


def test_generated_rows_are_seeded_and_sit_on_thresholds() -> None:
    X, _, _ = _data(300, 0)
    schema = infer_schema(X)
    splits = np.array([[0, 0.25], [1, -1.5]])
    one, two = held_out(X, schema, splits, seed=3), held_out(X, schema, splits, seed=3)
    pd.testing.assert_frame_equal(one, two)
    assert not one.equals(held_out(X, schema, splits, seed=4))
    assert list(one.dtypes) == list(X.dtypes)
    on = one.f0.to_numpy()
    for value in (0.25, np.nextafter(0.25, 1), np.nextafter(0.25, -1), float(np.nextafter(np.float32(0.25), 1))):
        assert value in on


def test_lightgbm_reads_near_zero_values_as_zero(tmp_path: Path) -> None:
    """LightGBM reads |x| <= 1e-35f as 0 before any split; the compiled graph does too (found by the threshold rows)."""
    lightgbm = pytest.importorskip("lightgbm")
    X, y, _ = _data(2000, 0)
    X.loc[X.index % 3 == 0, "f0"] = 0.0  # splits at +-kZeroThreshold appear
    model = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1).fit(X, y)
    record = compile_model(model, X, infer_schema(X, model), "estimator", tmp_path)
    assert record["path"] == "onnx", record["reason"]
    compiled = load_compiled(tmp_path)
    assert compiled is not None
    k = float(np.float32(1e-35))
    rows = X.iloc[:7].copy()
    rows["f0"] = [-k, k, np.nextafter(-k, -1), np.nextafter(k, 1), 0.0, -0.0, np.nan]
    np.testing.assert_allclose(compiled.fns["predict_proba"](rows), model.predict_proba(rows), rtol=1e-9, atol=1e-12)
