"""What ``predict`` sends: DataFrames, records, dicts and arrays as the JSON body the service reads."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic_core import to_json

from .errors import UsageError


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _column(col: pd.Series) -> list[Any]:
    """One column as plain Python values, vectorised (a 100k-row frame encodes in milliseconds)."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return [None if pd.isna(v) else v.isoformat() for v in col]
    if pd.api.types.is_float_dtype(col.dtype) and np.isinf(col.to_numpy(dtype="float64", na_value=np.nan)).any():
        raise UsageError(f"column '{col.name}' holds infinity, which the service refuses (400)")
    values = col.astype(object).tolist() if isinstance(col.dtype, pd.CategoricalDtype) else col.tolist()
    if col.hasnans:
        return [_clean(v) for v in values]
    return values


def payload(data: Any) -> dict[str, Any]:
    """``{"inputs": ...}`` for a DataFrame (split form), records, one record, or a 2-D array."""
    if isinstance(data, pd.DataFrame):
        cols = [str(c) for c in data.columns]
        columns = [_column(data.iloc[:, i]) for i in range(data.shape[1])]
        return {"inputs": {"columns": cols, "data": [list(row) for row in zip(*columns, strict=True)]}}
    if isinstance(data, np.ndarray):
        arr = np.atleast_2d(data)
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            return {"inputs": np.where(np.isnan(arr), None, arr.astype(object)).tolist()}  # type: ignore[call-overload]
        return {"inputs": arr.tolist()}
    if isinstance(data, dict):
        return {"inputs": [{k: _clean(v) for k, v in data.items()}]}
    if isinstance(data, list):
        return {"inputs": [{k: _clean(v) for k, v in r.items()} if isinstance(r, dict) else r for r in data]}
    raise UsageError(f"cannot send a {type(data).__name__}: pass a DataFrame, records, a dict or a 2-D array")


def encode(data: Any) -> bytes:
    """JSON bytes; pydantic-core's encoder (it comes with BentoML) writes floats shortest-exact, fast."""
    return to_json(payload(data), inf_nan_mode="strings")
