"""``dep.form()``, the try-it form in the notebook: the widgets are driven in-process as a kernel drives them (values
set on the widgets or with ``set``, buttons clicked), against one real deployment; the prediction comes back over
HTTP and must be what the model in the session says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbdeploy
from nbdeploy.errors import PredictionError
from nbdeploy.form import Form

pytestmark = pytest.mark.slow

NAME = "form-test"


@pytest.fixture(scope="module")
def deployed():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(5)
    n = 400
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "monthly": rng.normal(70, 20, n).round(2),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n)),
            "region": rng.choice(["north", "south", "east"], n),
            "signup": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        }
    )
    y = ((X.tenure < 24) | (X.monthly > 95) | (X.plan == "basic")).astype(int)
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure", "monthly"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
        ]
    )
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
    dep = nbdeploy.deploy(model, name=NAME, sample=X, compile=False)
    try:
        yield model, X, dep
    finally:
        dep.stop()


def _frame(values: dict, X: pd.DataFrame) -> pd.DataFrame:
    """The form's values as the session's frame (same dtypes), to ask the model in the kernel."""
    frame = pd.DataFrame([values])[X.columns]
    return frame.astype({c: X[c].dtype for c in X.columns if c != "signup"}).assign(signup=pd.to_datetime(frame.signup))


def test_values_in_prediction_out(deployed):
    model, X, dep = deployed
    form = dep.form(auto=False)
    assert isinstance(form, Form) and list(form.controls) == list(X.columns)
    assert [o for _, o in form.controls["plan"].options] == ["basic", "plus", "pro"]
    assert [o for _, o in form.controls["region"].options] == ["east", "north", "south"]
    form.set(tenure=3, monthly=99.5, plan="pro", region="north")
    form.controls["signup"].value = pd.Timestamp("2024-05-06").date()  # a widget set directly, as a user does
    assert form.values() == {"tenure": 3, "monthly": 99.5, "plan": "pro", "region": "north", "signup": "2024-05-06"}
    prediction = form.predict()
    frame = _frame(form.values(), X)
    assert prediction == model.predict(frame)[0]
    result = form.result
    assert result is not None and result["request_id"] == dep.last_request_id and result["version"] == dep.version
    proba = model.predict_proba(frame)[0]
    assert result["probabilities"] == {0: pytest.approx(proba[0], abs=1e-12), 1: pytest.approx(proba[1], abs=1e-12)}
    shown = form._output.value
    assert f">{prediction}</b>" in shown and result["request_id"] in shown and " ms · v1" in shown


def test_the_buttons_fill_sample_and_random_rows_and_auto_predicts(deployed):
    model, X, dep = deployed
    form = dep.form()  # auto: each change predicts
    assert form.result is None  # opening the form sends nothing
    form._random_button.click()
    values = form.result["inputs"]  # type: ignore[index]
    assert X.tenure.min() <= values["tenure"] <= X.tenure.max() and values["plan"] in ("basic", "plus", "pro")
    assert form.result["prediction"] == model.predict(_frame(values, X))[0]  # type: ignore[index]
    form.controls["tenure"].value = 71
    assert form.result["inputs"]["tenure"] == 71  # type: ignore[index]
    form._sample_button.click()
    assert form._sample_button.description.startswith("Sample row 2/")
    row = form.result["inputs"]  # type: ignore[index]
    first = X.iloc[round(np.linspace(0, len(X) - 1, len(form.rows))[1])]  # rows are spread over the sample
    assert row["tenure"] == first.tenure and row["region"] == first.region
    text = repr(form)
    assert text == f"<Form {NAME} v1: 5 fields>" and form._repr_mimebundle_()["text/plain"] == text
    form.close()


def test_an_error_shows_in_the_form_not_as_a_traceback(deployed, monkeypatch):
    _, _, dep = deployed
    form = dep.form(auto=False)

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PredictionError("column 'tenure': expected a number", status=400, hint="fix the input")

    monkeypatch.setattr(dep, "predict", refuse)
    assert form.predict() is None
    assert form.error == "column 'tenure': expected a number (hint: fix the input)"
    assert "expected a number" in form._output.value and form.result is None
