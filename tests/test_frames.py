"""Large frames travel as NumPy .npz bodies to ``/frame/predict``: same answers, same checks, same guard."""

from __future__ import annotations

import io
import re
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import auth
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import nbdeploy
from nbdeploy.capture.schema import infer_schema
from nbdeploy.runtime import frames
from nbdeploy.runtime.schema import InputError, arrays_to_model_input, to_model_input

SCHEMA = {
    "kind": "frame",
    "columns": [
        {"name": "n", "kind": "integer", "dtype": "int64", "nullable": False},
        {"name": "x", "kind": "float", "dtype": "float64", "nullable": True},
        {"name": "flag", "kind": "bool", "dtype": "bool", "nullable": False},
        {"name": "plan", "kind": "category", "dtype": "category", "categories": ["basic", "pro"]},
        {"name": "when", "kind": "datetime", "dtype": "datetime64[ns]", "nullable": True},
    ],
}
FRAME = pd.DataFrame(
    {
        "n": [1, 2, 3],
        "x": [0.5, np.nan, 2.0],
        "flag": [True, False, True],
        "plan": pd.Categorical(["basic", "pro", "basic"]),
        "when": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"]).astype("datetime64[ns]"),
    }
)


def _checked(frame: pd.DataFrame) -> pd.DataFrame:
    body = frames.encode(frame)
    assert body is not None
    return arrays_to_model_input(*frames.decode(body), SCHEMA)


def test_round_trip_keeps_values_and_dtypes():
    out = _checked(FRAME)
    pd.testing.assert_frame_equal(out, FRAME.astype({"plan": pd.CategoricalDtype(["basic", "pro"])}))


def test_object_columns_travel_as_json_texts_and_only_what_json_cannot_carry_falls_back():
    schema = {"kind": "dataframe", "columns": [{"name": "o", "kind": "object", "dtype": "object", "nullable": True}]}
    values = [[1, 2], [3, 4], None, np.nan, {"a": [1.5]}, "x", pd.NA]
    names, arrays = frames.decode(frames.encode(pd.DataFrame({"o": pd.Series(values, dtype=object)})))
    out = arrays_to_model_input(names, arrays, schema)["o"].tolist()
    assert out[:2] == [[1, 2], [3, 4]] and out[2] is None and isinstance(out[3], float) and out[6] is pd.NA
    assert out[4:6] == [{"a": [1.5]}, "x"]
    assert frames.encode(pd.DataFrame({"o": [{1, 2}, {3}]})) is None  # a set: neither route carries it


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (FRAME.drop(columns="x"), "missing column 'x'"),
        (FRAME.assign(extra=1), "unknown column 'extra'"),
        (FRAME.assign(x=["a", "b", "c"]), "column 'x': expected a number, got 'a' (row 0)"),
        (FRAME.assign(n=[1.0, 2.5, 3.0]), "column 'n': expected an integer, got 2.5 (row 1)"),
        (FRAME.assign(n=[1.0, np.nan, 3.0]), "column 'n': missing value in row 1"),
        (FRAME.assign(plan=["basic", "gold", "pro"]), "column 'plan': unknown category 'gold' (row 1)"),
        (FRAME.assign(when=["2026-01-01", "soon", "2026-01-03"]), "column 'when': expected a date/time, got 'soon'"),
        (FRAME.assign(flag=[1, 0, 1]), "column 'flag': expected true or false, got 1 (row 0)"),
    ],
)
def test_refusals_name_the_column_and_row(frame, message):
    with pytest.raises(InputError, match=re.escape(message)):
        _checked(frame)


def test_bodies_that_are_not_frames_are_refused_without_unpickling():
    buf = io.BytesIO()
    np.savez(buf, __columns__=np.array(["a"]), c0=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(frames.FrameError, match="without pickle"):
        frames.decode(buf.getvalue())
    with pytest.raises(frames.FrameError, match=r"not an \.npz file"):
        frames.decode(b"{'inputs': []}")
    buf = io.BytesIO()
    np.savez(buf, c0=np.arange(3))
    with pytest.raises(frames.FrameError, match="no '__columns__'"):
        frames.decode(buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, __columns__=np.array(["a", "b"]), c0=np.arange(3), c1=np.arange(4))
    with pytest.raises(frames.FrameError, match="same length"):
        frames.decode(buf.getvalue())


def test_object_columns_take_what_json_would():
    schema = {"kind": "dataframe", "columns": [{"name": "o", "kind": "object", "dtype": "object"}]}
    out = arrays_to_model_input(["o"], [np.array(["a", "b"])], schema)
    pd.testing.assert_frame_equal(out, to_model_input({"columns": ["o"], "data": [["a"], ["b"]]}, schema))


def test_a_model_trained_on_an_array_takes_the_columns_in_order():
    schema = {"kind": "ndarray", "n_features": 2, "dtype": "float64", "nullable": False}
    out = arrays_to_model_input(["a", "b"], [np.array([1, 2]), np.array([0.5, 1.5])], schema)
    np.testing.assert_array_equal(out, [[1.0, 0.5], [2.0, 1.5]])
    with pytest.raises(InputError, match="expected 2 columns"):
        arrays_to_model_input(["a"], [np.array([1.0])], schema)
    with pytest.raises(InputError, match="feature 1: expected a number"):
        arrays_to_model_input(["a", "b"], [np.array([1.0]), np.array(["x"])], schema)
    with pytest.raises(InputError, match=re.escape("feature 0: missing value in row 1")):
        arrays_to_model_input(["a", "b"], [np.array([1.0, np.nan]), np.array([1.0, 2.0])], schema)
    with pytest.raises(InputError, match="empty"):
        arrays_to_model_input(["a", "b"], [np.array([]), np.array([])], schema)


@pytest.mark.slow
def test_an_array_trained_model_answers_a_large_frame(churn_data, stop_after):
    X, y = churn_data
    num = X.drop(columns="plan")
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(num.to_numpy(), y)
    dep = nbdeploy.deploy(model, name="frames-array", sample=num.to_numpy())
    stop_after(dep)
    big = pd.concat([num] * 4, ignore_index=True)  # 2,400 rows as a DataFrame: goes as .npz
    assert (dep.predict(big) == model.predict(big.to_numpy())).all()


@pytest.fixture(scope="module")
def pipeline_dep(churn_data):
    X, y = churn_data
    pre = ColumnTransformer([("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])], remainder="passthrough")
    model = make_pipeline(pre, RandomForestClassifier(n_estimators=20, random_state=0)).fit(X, y)
    dep = nbdeploy.deploy(model, name="frames", sample=X, limits={"max_rows": 20_000})
    yield dep, model, X
    dep.stop()


@pytest.mark.slow
def test_a_large_frame_goes_as_npz_and_answers_as_the_session(pipeline_dep):
    dep, model, X = pipeline_dep
    big = pd.concat([X] * 10, ignore_index=True)  # 6,000 rows: over client.NPZ_ROWS
    assert (dep.predict(big) == model.predict(big)).all()
    rid = dep.last_request_id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the request log commits in batches
        log = dep.requests()
        if rid in set(log.request_id):
            break
        time.sleep(0.1)
    row = log[log.request_id == rid].iloc[0]
    assert row.status == 200 and row.n_rows == len(big)


@pytest.mark.slow
def test_the_npz_route_has_the_same_guard_and_checks(pipeline_dep):
    dep, _, X = pipeline_dep
    url = f"{dep.url}{frames.ROUTE}"
    npz = {"content-type": frames.MEDIA_TYPE}
    body = frames.encode(X)
    with httpx.Client(trust_env=False, timeout=30) as http:
        assert http.post(url, content=body, headers=npz).status_code == 401
        # default-deny: any route but health, metrics and the API description needs the key
        assert http.post(f"{dep.url}/not-a-route").status_code == 401
        assert http.get(f"{dep.url}/docs.json").status_code == 200
        assert http.post(url, content=body, headers={**npz, "authorization": "Bearer nbd_wrong"}).status_code == 401
        ok = http.post(url, content=body, headers={**auth(dep), **npz})
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == len(X) and ok.headers["x-request-id"]
        wrong_type = http.post(url, content=body, headers={**auth(dep), "content-type": "application/json"})
        assert wrong_type.status_code == 415 and frames.MEDIA_TYPE in wrong_type.json()["error"]
        missing = http.post(url, content=frames.encode(X.drop(columns="plan")), headers={**auth(dep), **npz})
        assert missing.status_code == 400 and missing.json()["error"] == "missing column 'plan'"
        garbage = http.post(url, content=b"not a zip", headers={**auth(dep), **npz})
        assert garbage.status_code == 400 and "not an .npz file" in garbage.json()["error"]
        too_many = frames.encode(pd.concat([X] * 40, ignore_index=True))  # 24,000 rows > max_rows 20,000
        answer = http.post(url, content=too_many, headers={**auth(dep), **npz})
        assert answer.status_code == 413 and "the limit is 20000" in answer.json()["error"]


def test_missing_values_of_dtypes_without_nan_travel_as_a_mask():
    df = pd.DataFrame({"n": [1, None, 3], "ok": [True, None, False], "s": ["a", None, "c"]}).convert_dtypes()
    names, arrays = frames.decode(frames.encode(df))
    assert all(np.ma.isMaskedArray(a) for a in arrays) and arrays[0].mask.tolist() == [False, True, False]
    out = arrays_to_model_input(names, arrays, infer_schema(df))
    pd.testing.assert_frame_equal(out, df)


def test_zoned_times_durations_and_number_categories_travel_as_arrays():
    df = pd.DataFrame(
        {
            "t": pd.to_datetime(["2026-03-29 00:30", None]).tz_localize("UTC").tz_convert("Europe/Paris"),
            "d": pd.to_timedelta(["1 days 00:00:00.000000001", None]),
            "c": pd.Categorical([20, None], categories=[3, 20], ordered=True),
        }
    )
    names, arrays = frames.decode(frames.encode(df))
    assert [a.dtype.kind for a in arrays] == ["M", "m", "i"]
    pd.testing.assert_frame_equal(arrays_to_model_input(names, arrays, infer_schema(df)), df)


def test_masks_and_json_texts_that_are_not_what_encode_writes_are_refused():
    def body(**arrays):
        buf = io.BytesIO()
        np.savez(buf, __columns__=np.array(["n"]), **arrays)
        return buf.getvalue()

    with pytest.raises(frames.FrameError, match="boolean mask"):
        frames.decode(body(c0=np.array([1, 2]), m0=np.array([0, 1])))
    with pytest.raises(frames.FrameError, match="not JSON texts"):
        frames.decode(body(c0=np.array([1, 2]), __json__=np.array([0])))
    with pytest.raises(frames.FrameError, match="is not JSON"):
        frames.decode(body(c0=np.array(["[1", "2"]), __json__=np.array([0])))
