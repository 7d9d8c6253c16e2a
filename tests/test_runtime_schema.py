"""The request validator on its own: every refusal names the column; accepted input matches the sample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbdeploy.capture.schema import infer_schema
from nbdeploy.errors import SchemaError
from nbdeploy.runtime.schema import InputError, to_model_input
from nbdeploy.wire import payload

SAMPLE = pd.DataFrame(
    {
        "age": np.array([30, 40, 50], dtype="int64"),
        "income": [1.5, 2.5, np.nan],
        "member": [True, False, True],
        "city": ["oslo", "rome", "lima"],
        "plan": pd.Categorical(["a", "b", "a"]),
        "seen": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
    }
)
SCHEMA = infer_schema(SAMPLE)


def test_schema_records_kinds_and_nullability():
    kinds = {c["name"]: (c["kind"], c["nullable"]) for c in SCHEMA["columns"]}
    assert kinds == {
        "age": ("integer", False),
        "income": ("float", True),
        "member": ("bool", False),
        "city": ("string", False),
        "plan": ("category", False),
        "seen": ("datetime", False),
    }


def test_round_trip_reproduces_the_sample_frame():
    frame = to_model_input(payload(SAMPLE)["inputs"], SCHEMA)
    pd.testing.assert_frame_equal(frame, SAMPLE)
    records = to_model_input(payload(SAMPLE.to_dict(orient="records"))["inputs"], SCHEMA)
    pd.testing.assert_frame_equal(records, SAMPLE)


def test_columns_are_reordered_to_the_schema():
    shuffled = SAMPLE[list(reversed(SAMPLE.columns))]
    pd.testing.assert_frame_equal(to_model_input(payload(shuffled)["inputs"], SCHEMA), SAMPLE)


def _row(**over):
    row = {"age": 1, "income": 1.0, "member": True, "city": "x", "plan": "a", "seen": "2024-01-01"}
    row.update(over)
    return [{k: v for k, v in row.items() if v is not ...}]


@pytest.mark.parametrize(
    "inputs, message",
    [
        (_row(age=...), "missing column 'age'"),
        (_row(extra=3), "unknown column 'extra'"),
        (_row(age="old"), "column 'age': expected a number, got 'old' (row 0)"),
        (_row(age=1.5), "column 'age': expected an integer"),
        (_row(age=None), "column 'age': missing value in row 0"),
        (_row(income=True), "column 'income': expected a number"),
        (_row(member="yes"), "column 'member': expected true or false"),
        (_row(city=5), "column 'city': expected a string"),
        (_row(plan="z"), "column 'plan': unknown category 'z'"),
        (_row(seen="not a date"), "column 'seen': expected a date/time"),
        ([], "empty"),
        ("text", "'inputs' must be a list of records"),
        ([1, 2], "row 0 is int"),
        ({"columns": ["age"], "data": [[1, 2]]}, "row 0 has 2 values but the columns name 1"),
        ({"columns": ["age", "age"], "data": [[1, 2]]}, "column 'age' is named twice"),
    ],
)
def test_refusals_name_the_problem(inputs, message):
    with pytest.raises(InputError) as info:
        to_model_input(inputs, SCHEMA)
    assert message in str(info.value)


def test_nullable_float_accepts_missing_values():
    frame = to_model_input(_row(income=None), SCHEMA)
    assert np.isnan(frame["income"].iloc[0])


def test_ndarray_schema():
    schema = infer_schema(np.zeros((4, 3)))
    assert schema == {"kind": "ndarray", "n_features": 3, "dtype": "float64", "nullable": False}
    np.testing.assert_array_equal(to_model_input([[1, 2, 3]], schema), np.array([[1.0, 2.0, 3.0]]))
    with pytest.raises(InputError, match="row 0: expected a list of 3 values, got 2"):
        to_model_input([[1, 2]], schema)
    with pytest.raises(InputError, match="feature 1: expected a number"):
        to_model_input([[1, "a", 3]], schema)


@pytest.mark.parametrize(
    "sample, message",
    [
        (pd.Series([1, 2], name="a"), "the sample is a Series"),
        (np.zeros(3), "1 dimensions"),
        ("X_train", "the sample is a str"),
        (pd.DataFrame({"a": []}), "no rows"),
        (pd.DataFrame([[1.0, 2.0]], columns=[1, "1"]), "same name as text"),
    ],
)
def test_bad_samples_are_named(sample, message):
    with pytest.raises(SchemaError, match=message):
        infer_schema(sample)


# -- dtypes beyond NumPy's, labels that are not strings, polars, and named input to an array model (#17, #18) --

import json  # noqa: E402
import warnings  # noqa: E402

from dtype_frames import COLUMNS, frame, report  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nbdeploy.runtime import frames  # noqa: E402
from nbdeploy.runtime.schema import arrays_to_model_input, input_warning  # noqa: E402
from nbdeploy.wire import ColumnOrderWarning, encode  # noqa: E402

EVERY_DTYPE = infer_schema(frame(0, 12, sample=True))


def _over_json(df: pd.DataFrame, schema: dict) -> pd.DataFrame:
    return to_model_input(json.loads(encode(df))["inputs"], schema)


def _over_npz(df: pd.DataFrame, schema: dict) -> pd.DataFrame:
    body = frames.encode(df)
    assert body is not None
    return arrays_to_model_input(*frames.decode(body), schema)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 9))
def test_every_dtype_reaches_the_model_as_in_the_notebook_over_both_routes(seed, n):
    df = frame(seed, n)
    assert report(_over_json(df, EVERY_DTYPE)) == report(df)
    assert report(_over_npz(df, EVERY_DTYPE)) == report(df)


def test_the_schema_records_extended_dtypes_exactly():
    specs = {c["name"]: c for c in EVERY_DTYPE["columns"]}
    assert specs["Int64"]["ext"] == "masked" and specs["Int64"]["kind"] == "integer" and specs["Int64"]["nullable"]
    assert specs["pa_float"]["ext"] == "arrow" and specs["pa_float"]["dtype"] == "double[pyarrow]"
    assert specs["string_pa"]["storage"] == "pyarrow" and specs["string_pa"]["na_value"] == "NA"
    assert specs["cat_int"]["categories"] == [3, 1, 20] and specs["cat_int"]["categories_dtype"] == "int64"
    assert specs["td"]["kind"] == "timedelta" and specs["obj_nan"]["na"] == "nan"
    assert [c["name"] for c in EVERY_DTYPE["columns"]] == [str(c) for c in COLUMNS]
    json.dumps(EVERY_DTYPE, allow_nan=False)  # the schema is JSON


def test_lists_of_one_length_stay_a_column_of_lists():
    df = pd.DataFrame({"v": [[1, 2], [3, 4]]})
    out = to_model_input(payload(df)["inputs"], infer_schema(df))
    assert out["v"].tolist() == [[1, 2], [3, 4]] and out["v"].dtype == object


def test_nullable_columns_from_convert_dtypes_take_missing_values():
    df = pd.DataFrame({"n": [1, None, 3], "x": [0.5, None, 1.5], "b": [True, None, False]}).convert_dtypes()
    out = to_model_input(payload(df)["inputs"], infer_schema(df))
    pd.testing.assert_frame_equal(out, df)


@pytest.mark.parametrize(
    "column, message",
    [
        (pd.Series(pd.period_range("2026-01", periods=2, freq="M")), "column 'c' has dtype period"),
        (pd.Series([1 + 2j, 3j]), "column 'c' has dtype complex128"),
        (pd.Series(pd.arrays.IntervalArray.from_breaks([0, 1, 2])), "column 'c' has dtype interval"),
        (pd.Series([(1, 2), (3, 4)]), "column 'c' has dtype object.*row 0 holds a tuple"),
        (pd.Series(pd.Categorical(pd.to_datetime(["2026-01-01"]))), "column 'c' has dtype category"),
    ],
)
def test_dtypes_that_cannot_travel_are_refused_at_capture_naming_column_and_dtype(column, message):
    with pytest.raises(SchemaError, match=message):
        infer_schema(pd.DataFrame({"c": column}))


def test_a_request_outside_an_extended_dtype_is_an_input_error_naming_column_and_row():
    with pytest.raises(InputError, match=r"column 'pa_float': expected a number, got 'x' \(row 1\)"):
        to_model_input({"columns": ["pa_float"], "data": [[1.0], ["x"]]}, _only("pa_float"))
    with pytest.raises(InputError, match=r"column 'Int8': 300 does not fit in Int8 \(row 0\)"):
        to_model_input([{"Int8": 300}], _only("Int8"))
    with pytest.raises(InputError, match=r"column 'pa_int': expected an integer, got 2.5 \(row 0\)"):
        to_model_input([{"pa_int": 2.5}], _only("pa_int"))
    with pytest.raises(InputError, match=r"column 'td': expected a duration, got 'soon' \(row 0\)"):
        to_model_input([{"td": "soon"}], _only("td"))
    with pytest.raises(InputError, match="unknown marker"):
        to_model_input({"columns": ["mixed"], "data": [[None]], "na": {"mixed": {"nil": [0]}}}, _only("mixed"))


def _only(name: str) -> dict:
    return {"kind": "dataframe", "columns": [c for c in EVERY_DTYPE["columns"] if c["name"] == name]}


def _records(df: pd.DataFrame, schema: dict) -> pd.DataFrame:
    return to_model_input(json.loads(encode(df.to_dict(orient="records")))["inputs"], schema)  # keys become text


def test_labels_that_are_not_strings_reach_the_model_as_they_were():
    X = pd.DataFrame(np.arange(6.0).reshape(2, 3))  # labels 0, 1, 2: user code says df[0]
    schema = infer_schema(X)
    for out in (_over_json(X, schema), _over_npz(X, schema), _records(X, schema)):
        pd.testing.assert_frame_equal(out, X)
        assert isinstance(out.columns, pd.RangeIndex) and out[0].tolist() == [0.0, 3.0]
    mixed = pd.DataFrame([[1.0, 2.0, 3.0, 4.0]], columns=[0, "a", 2.5, np.int64(7)])
    out = _over_json(mixed, infer_schema(mixed))
    assert list(out.columns) == [0, "a", 2.5, 7] and [type(c) for c in out.columns] == [int, str, float, int]
    tuples = pd.DataFrame([[1.0, 2.0]], columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)]))
    pd.testing.assert_frame_equal(_over_json(tuples, infer_schema(tuples)), tuples)


def test_a_polars_sample_gives_the_model_a_polars_frame():
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"x": [1, 2, 3], "n": [1.5, None, 2.0], "s": ["a", None, "c"], "l": [[1], [2, 3], None]})
    schema = infer_schema(df)
    assert schema["library"] == "polars"
    for out in (to_model_input(json.loads(encode(df))["inputs"], schema), _over_npz(df, schema)):
        assert isinstance(out, pl.DataFrame) and out.schema == df.schema and out.equals(df, null_equal=True)
    pd.testing.assert_frame_equal(
        _over_json(pd.DataFrame({"x": [1.0]}), infer_schema(pd.DataFrame({"x": [1.0]}))), pd.DataFrame({"x": [1.0]})
    )  # a pandas schema never imports polars' path


class _Fitted:
    feature_names_in_ = np.array(["a", "b", "c"], dtype=object)


def test_an_array_sample_with_the_models_feature_names_maps_named_input_by_name():
    X = pd.DataFrame({"a": [1.0, 2.0], "b": [10.0, 20.0], "c": [100.0, 200.0]})
    schema = infer_schema(X.to_numpy(), model=_Fitted())
    assert schema["feature_names"] == ["a", "b", "c"]
    reversed_ = X[["c", "b", "a"]]
    np.testing.assert_array_equal(_over_json(reversed_, schema), X.to_numpy())
    np.testing.assert_array_equal(_over_npz(reversed_, schema), X.to_numpy())
    np.testing.assert_array_equal(to_model_input(reversed_.to_dict(orient="records"), schema), X.to_numpy())
    np.testing.assert_array_equal(to_model_input(X.to_numpy().tolist(), schema), X.to_numpy())  # rows: in order
    np.testing.assert_array_equal(_over_json(pd.DataFrame(X.to_numpy()), schema), X.to_numpy())  # labels 0, 1, 2
    np.testing.assert_array_equal(_over_npz(pd.DataFrame(X.to_numpy()), schema), X.to_numpy())
    with pytest.raises(InputError, match="missing column 'a'"):
        _over_json(X.rename(columns={"a": "z"}), schema)


def test_a_named_frame_sent_to_an_unnamed_array_model_warns_on_both_sides():
    X = pd.DataFrame({"a": [1.0, 2.0], "b": [10.0, 20.0]})
    schema = infer_schema(X.to_numpy())
    with pytest.warns(ColumnOrderWarning, match="taken by position"):
        payload(X[["b", "a"]], schema)
    assert "taken by position" in input_warning(payload(X)["inputs"], schema)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        payload(pd.DataFrame(X.to_numpy()), schema)  # positional labels 0, 1: nothing to say
        payload(X.to_numpy(), schema)
    assert input_warning(payload(pd.DataFrame(X.to_numpy()))["inputs"], schema) is None
