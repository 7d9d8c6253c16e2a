"""What ``predict`` sends: DataFrames, records, dicts and arrays as the JSON body the service reads.

Every value travels as the JSON value the service's schema rebuilds exactly: ``pd.NA``/``NaT``/NaN as null, times
as ISO strings, durations as pandas writes them, categories as their values. An object column whose missing values
are not all None says which rows hold NaN, ``pd.NA`` or ``NaT`` (the split form's ``na``), so the model gets the same
marker it had in the notebook. Column labels go as text; the schema maps them back. A polars frame travels as the
pandas frame that stands for it (``runtime.schema.from_polars``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from pydantic_core import to_json

from .errors import UsageError
from .runtime.schema import InputError, from_polars, is_polars, names_warning


class ColumnOrderWarning(UserWarning):
    """Named columns sent to a model deployed with an unnamed array sample: they are taken by position."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT or value is pd.NA or value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        return str(value)
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _column(col: pd.Series) -> list[Any]:
    """One column as plain Python values, vectorised (a 100k-row frame encodes in milliseconds)."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return [None if pd.isna(v) else pd.Timestamp(v).isoformat() for v in col]
    if pd.api.types.is_timedelta64_dtype(col.dtype) or getattr(col.dtype, "kind", "") == "m":
        return [None if pd.isna(v) else str(pd.Timedelta(v)) for v in col]
    if pd.api.types.is_float_dtype(col.dtype) and np.isinf(col.to_numpy(dtype="float64", na_value=np.nan)).any():
        raise UsageError(f"column '{col.name}' holds infinity, which the service refuses (400)")
    values = col.astype(object).tolist() if isinstance(col.dtype, pd.CategoricalDtype) else col.tolist()
    if col.hasnans:
        return [_clean(v) for v in values]
    return values


def _markers(col: pd.Series) -> dict[str, list[int]] | None:
    """Rows of an object column whose missing value is NaN, ``pd.NA`` or ``NaT`` rather than None."""
    if col.dtype != object or not col.hasnans:
        return None
    out: dict[str, list[int]] = {}
    for row in np.flatnonzero(col.isna().to_numpy()).tolist():
        v = col.iat[row]
        marker = "None" if v is None else "NA" if v is pd.NA else "NaT" if v is pd.NaT else "nan"
        out.setdefault(marker, []).append(row)
    return out


def warn_names(data: Any, schema: dict[str, Any] | None) -> None:
    """Warn when a named frame goes to a model deployed with an unnamed array sample (taken by position)."""
    if schema is None or (not isinstance(data, pd.DataFrame) and not is_polars(data)):
        return
    message = names_warning(list(data.columns), schema)
    if message is not None:
        warnings.warn(message, ColumnOrderWarning, stacklevel=3)


def payload(data: Any, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"inputs": ...}`` for a DataFrame (split form), records, one record, or a 2-D array.

    With the deployment's ``schema``, a named frame meeting a model deployed with an unnamed array warns
    (``ColumnOrderWarning``): its columns will be taken by position."""
    warn_names(data, schema)
    if is_polars(data):
        try:
            data = from_polars(data)
        except InputError as exc:
            raise UsageError(str(exc)) from None
    if isinstance(data, pd.DataFrame):
        cols = [str(c) for c in data.columns]
        columns = [_column(data.iloc[:, i]) for i in range(data.shape[1])]
        inputs: dict[str, Any] = {"columns": cols, "data": [list(row) for row in zip(*columns, strict=True)]}
        na = {c: m for c, i in zip(cols, range(data.shape[1]), strict=True) if (m := _markers(data.iloc[:, i]))}
        if na:
            inputs["na"] = na
        return {"inputs": inputs}
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


def _fallback(value: Any) -> Any:
    """Values pydantic-core does not know (NumPy scalars and arrays inside object columns)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise UsageError(f"cannot send a {type(value).__name__} value ({value!r:.40}) as JSON")


def encode(data: Any, schema: dict[str, Any] | None = None) -> bytes:
    """JSON bytes; pydantic-core's encoder (it comes with BentoML) writes floats shortest-exact, fast."""
    return to_json(payload(data, schema), inf_nan_mode="strings", fallback=_fallback)
