"""Infer the input schema from the sample the user passes: column names, dtypes, categories."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import SchemaError


def as_frame(sample: Any) -> pd.DataFrame | np.ndarray:
    """The sample as the model will see it: a DataFrame, or a 2-D float array."""
    if isinstance(sample, pd.DataFrame):
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


def _column_spec(name: str, col: pd.Series) -> dict[str, Any]:
    dtype = col.dtype
    spec: dict[str, Any] = {"name": name, "dtype": str(dtype), "nullable": bool(col.isna().any())}
    if isinstance(dtype, pd.CategoricalDtype):
        spec.update(kind="category", categories=[c for c in dtype.categories.tolist()], ordered=bool(dtype.ordered))
        if not all(isinstance(c, str) for c in spec["categories"]):
            raise SchemaError(f"column '{name}': only string categories are supported")
    elif pd.api.types.is_bool_dtype(dtype):
        spec["kind"] = "bool"
    elif pd.api.types.is_integer_dtype(dtype):
        spec["kind"] = "integer"
    elif pd.api.types.is_float_dtype(dtype):
        spec["kind"] = "float"
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        spec["kind"] = "datetime"
        spec["utc"] = getattr(dtype, "tz", None) is not None
    elif pd.api.types.is_string_dtype(dtype) or dtype.kind == "O":
        values = col.dropna()
        spec["kind"] = "string" if all(isinstance(v, str) for v in values) else "object"
    else:
        raise SchemaError(f"column '{name}' has dtype {dtype}, which nbdeploy cannot send over JSON")
    return spec


def infer_schema(sample: Any) -> dict[str, Any]:
    """A JSON-able description of the model input, used by the service to validate requests."""
    data = as_frame(sample)
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "fiub":
            raise SchemaError(f"the sample array has dtype {data.dtype}; only numeric arrays are supported")
        return {
            "kind": "ndarray",
            "n_features": int(data.shape[1]),
            "dtype": str(data.dtype),
            "nullable": bool(np.isnan(data.astype("float64")).any()),
        }
    if len(data) == 0:
        raise SchemaError("the sample has no rows")
    names = [str(c) for c in data.columns]
    if names != list(data.columns):
        raise SchemaError("column names must be strings", hint="rename with X.columns = X.columns.astype(str)")
    if len(set(names)) != len(names):
        raise SchemaError("the sample has duplicate column names")
    return {"kind": "dataframe", "columns": [_column_spec(n, data[n]) for n in names]}
