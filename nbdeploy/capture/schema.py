"""Infer the input schema from the sample the user passes: column labels, exact dtypes, categories, missing markers.

The schema must let the service rebuild the very frame the model saw: a dtype beyond NumPy's is recorded so that
``runtime.schema.target_dtype`` rebuilds it (pyarrow types as an IPC schema, string storage and NA value), labels
that are not strings as [type, value], a polars sample as the polars schema. What cannot travel is refused here,
naming the column and its dtype, rather than failing at predict.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SchemaError
from ..runtime.schema import InputError, from_polars, is_polars

#: pandas' nullable dtypes (``convert_dtypes``): missing is ``pd.NA``.
_MASKED = {
    "Int8": "integer", "Int16": "integer", "Int32": "integer", "Int64": "integer",
    "UInt8": "integer", "UInt16": "integer", "UInt32": "integer", "UInt64": "integer",
    "Float32": "float", "Float64": "float", "boolean": "bool",
}  # fmt: skip
#: Values an object column may hold: what JSON carries back as the same Python value.
_JSON_SCALARS = (str, int, float, bool, type(None))


def as_frame(sample: Any) -> Any:
    """The sample as the model will see it: a DataFrame (pandas or polars), or a 2-D array."""
    if isinstance(sample, pd.DataFrame) or is_polars(sample):
        return sample
    if isinstance(sample, pd.Series):
        raise SchemaError(
            f"the sample is a Series ({sample.name!r}); pass a DataFrame",
            hint="use sample=X[[column]] or sample=series.to_frame()",
        )
    if isinstance(sample, np.ndarray):
        if sample.ndim != 2:
            raise SchemaError(f"the sample array has {sample.ndim} dimensions; a 2-D array (rows × features) is needed")
        return sample
    if isinstance(sample, list) and sample and all(isinstance(r, dict) for r in sample):
        return pd.DataFrame.from_records(sample)
    raise SchemaError(
        f"the sample is a {type(sample).__name__}; pass the DataFrame (or 2-D array) the model was trained on",
        hint="e.g. --sample X_train",
    )


def _cannot(name: str, dtype: Any, why: str = "") -> SchemaError:
    return SchemaError(
        f"column '{name}' has dtype {dtype}, which nbdeploy cannot carry to the service{why}",
        hint=f"convert it in the sample and in the model's code (e.g. X['{name}'].astype(str))",
    )


def _arrow_spec(name: str, dtype: pd.ArrowDtype) -> dict[str, Any]:
    """A pyarrow-backed column: its kind, and its arrow type as an IPC schema (exact, whatever the type)."""
    import pyarrow as pa

    t = dtype.pyarrow_dtype
    value = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else t
    if pa.types.is_boolean(t):
        kind = "bool"
    elif pa.types.is_integer(t):
        kind = "integer"
    elif pa.types.is_floating(t):
        kind = "float"
    elif pa.types.is_timestamp(t):
        kind = "datetime"
    elif pa.types.is_duration(t):
        kind = "timedelta"
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        kind = "string"
    elif value is not t and (
        pa.types.is_integer(value)
        or pa.types.is_floating(value)
        or pa.types.is_boolean(value)
        or pa.types.is_string(value)
        or pa.types.is_large_string(value)
    ):
        kind = "object"  # lists of numbers, booleans or strings: JSON arrays
    else:
        raise _cannot(name, dtype)
    ipc = pa.schema([pa.field(name, t)]).serialize().to_pybytes()
    spec: dict[str, Any] = {"kind": kind, "ext": "arrow", "arrow": base64.b64encode(ipc).decode()}
    if kind == "datetime":
        spec["utc"] = t.tz is not None
    return spec


def _marker(value: Any) -> str:
    if value is None:
        return "None"
    if value is pd.NA:
        return "NA"
    if value is pd.NaT:
        return "NaT"
    return "nan"


def _object_spec(name: str, col: pd.Series) -> dict[str, Any]:
    """Strings or JSON values; anything JSON would turn into another type (tuples, dates, Decimals) is refused."""
    values = col.tolist()
    missing = col.isna().to_numpy()
    present = [v for v, m in zip(values, missing, strict=True) if not m]
    for row, v in enumerate(values):
        if not missing[row] and not _travels(v):
            raise _cannot(name, col.dtype, f": row {row} holds a {type(v).__name__} ({v!r:.40}), which JSON changes")
    spec: dict[str, Any] = {"kind": "string" if all(isinstance(v, str) for v in present) else "object"}
    if missing.any():
        spec["na"] = _marker(values[int(np.flatnonzero(missing)[0])])
    return spec


def _travels(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _JSON_SCALARS) or (isinstance(value, np.generic) and value.dtype.kind in "biuf"):
        return not (isinstance(value, float) and math.isinf(value))
    if depth > 20:
        return False
    if type(value) is list:
        return all(_travels(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _travels(v, depth + 1) for k, v in value.items())
    return False


def _category_spec(name: str, dtype: pd.CategoricalDtype) -> dict[str, Any]:
    cats = dtype.categories.tolist()
    if not all(isinstance(c, (str, int, float, bool)) for c in cats):
        raise _cannot(name, dtype, ": only categories of strings or numbers travel as JSON")
    spec: dict[str, Any] = {"kind": "category", "categories": cats, "ordered": bool(dtype.ordered)}
    if not all(isinstance(c, str) for c in cats):
        spec["categories_dtype"] = str(dtype.categories.dtype)
    return spec


def _column_spec(name: str, col: pd.Series) -> dict[str, Any]:
    dtype = col.dtype
    spec: dict[str, Any] = {"name": name, "dtype": str(dtype), "nullable": bool(col.isna().any())}
    if isinstance(dtype, pd.ArrowDtype):
        spec.update(_arrow_spec(name, dtype))
    elif isinstance(dtype, pd.CategoricalDtype):
        spec.update(_category_spec(name, dtype))
    elif isinstance(dtype, pd.StringDtype):
        na_value = "nan" if isinstance(dtype.na_value, float) else "NA"
        spec.update(kind="string", ext="string", storage=dtype.storage, na_value=na_value)
    elif str(dtype) in _MASKED and not isinstance(dtype, np.dtype):
        spec.update(kind=_MASKED[str(dtype)], ext="masked")
    elif pd.api.types.is_bool_dtype(dtype):
        spec["kind"] = "bool"
    elif pd.api.types.is_integer_dtype(dtype):
        spec["kind"] = "integer"
    elif pd.api.types.is_float_dtype(dtype):
        spec["kind"] = "float"
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        spec["kind"] = "datetime"
        spec["utc"] = getattr(dtype, "tz", None) is not None
    elif pd.api.types.is_timedelta64_dtype(dtype):
        spec["kind"] = "timedelta"
    elif isinstance(dtype, np.dtype) and dtype.kind == "O":
        spec.update(_object_spec(name, col))
    else:
        raise _cannot(name, dtype)
    return spec


def _label(value: Any) -> Any:
    """A column label as JSON keeps it: strings as they are, others as [type, value]."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return ["bool", bool(value)]
    if isinstance(value, (int, np.integer)):
        return ["int", int(value)]
    if isinstance(value, (float, np.floating)):
        return ["float", float(value)]
    if value is None:
        return ["none", None]
    if isinstance(value, tuple):
        return ["tuple", [_label(v) for v in value]]
    raise SchemaError(
        f"column label {value!r} is a {type(value).__name__}; labels must be strings, numbers, booleans or tuples",
        hint="rename that column in the sample and in the model's code",
    )


def _labels(columns: pd.Index) -> dict[str, Any] | None:
    """How to rebuild the sample's columns index, when a label is not a string (``pd.DataFrame(array)``)."""
    if all(isinstance(c, str) for c in columns):
        return None
    labels: dict[str, Any] = {"values": [_label(c) for c in columns], "dtype": str(columns.dtype)}
    if isinstance(columns, pd.RangeIndex):
        labels["range"] = [columns.start, columns.stop, columns.step]
    if isinstance(columns, pd.MultiIndex):
        labels["multi"] = True
    return labels


def _frame_schema(data: pd.DataFrame) -> dict[str, Any]:
    if len(data) == 0:
        raise SchemaError("the sample has no rows")
    if data.columns.has_duplicates:
        dup = data.columns[data.columns.duplicated()][0]
        raise SchemaError(f"the sample has duplicate column names ({dup!r})")
    names = [str(c) for c in data.columns]  # what JSON and .npz call them; the service maps them back
    if len(set(names)) != len(names):
        seen: dict[str, Any] = {}
        for c, n in zip(data.columns, names, strict=True):
            if n in seen:
                raise SchemaError(
                    f"columns {seen[n]!r} and {c!r} have the same name as text ('{n}'), which is how requests name "
                    "them",
                    hint="rename one of them",
                )
            seen[n] = c
    schema: dict[str, Any] = {
        "kind": "dataframe",
        "columns": [_column_spec(n, data.iloc[:, i]) for i, n in enumerate(names)],
    }
    labels = _labels(data.columns)
    if labels is not None:
        schema["labels"] = labels
    return schema


def _polars_schema(sample: Any) -> dict[str, Any]:
    """A polars sample: the pandas frame that stands for it on the wire, plus the polars schema to rebuild."""
    try:
        proxy = from_polars(sample)
    except InputError as exc:
        raise SchemaError(str(exc), hint="cast that column in the sample and in the model's code") from None
    schema = _frame_schema(proxy)
    empty = type(sample)(schema=sample.schema)
    schema.update(library="polars", polars=base64.b64encode(empty.write_ipc(None).getvalue()).decode())
    return schema


def infer_schema(sample: Any, model: Any = None) -> dict[str, Any]:
    """A JSON-able description of the model input, used by the service to validate requests.

    ``model``, when given, lends its ``feature_names_in_`` to an array sample: a named frame sent to the service
    is then mapped by name, as scikit-learn would check it, instead of taken by position.
    """
    data = as_frame(sample)
    if is_polars(data):
        return _polars_schema(data)
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "fiub":
            raise SchemaError(f"the sample array has dtype {data.dtype}; only numeric arrays are supported")
        schema: dict[str, Any] = {
            "kind": "ndarray",
            "n_features": int(data.shape[1]),
            "dtype": str(data.dtype),
            "nullable": bool(np.isnan(data.astype("float64")).any()),
        }
        names = getattr(model, "feature_names_in_", None)
        if names is not None and len(names) == data.shape[1]:
            schema["feature_names"] = [str(n) for n in names]
        return schema
    return _frame_schema(data)


def schema_modules(schema: dict[str, Any]) -> set[str]:
    """Modules the service needs to rebuild the schema's frame, though the model may never import them."""
    needed: set[str] = set()
    if schema.get("library") == "polars":
        needed.add("polars")
    for spec in schema.get("columns", []):
        if spec.get("ext") == "arrow" or (spec.get("storage") == "pyarrow" and spec.get("na_value") == "NA"):
            needed.add("pyarrow")
    return needed
