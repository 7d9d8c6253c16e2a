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
        (pd.DataFrame({0: [1.0]}), "column names must be strings"),
    ],
)
def test_bad_samples_are_named(sample, message):
    with pytest.raises(SchemaError, match=message):
        infer_schema(sample)
