"""Turn a request's ``inputs`` into exactly the frame the model saw in the notebook, or say why not.

The checks are vectorised per column so they cost microseconds per request, and every refusal
names the column (and row) so the caller can fix the request without reading server logs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: The kinds a column can have; the capture side infers them from the sample.
KINDS = ("integer", "float", "bool", "string", "category", "datetime", "object")


class InputError(ValueError):
    """A request the schema refuses; the message names the column or field."""


def _row_of(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _frame(inputs: Any, names: list[str]) -> pd.DataFrame:
    """Build a frame from records or split JSON, checking the set of columns."""
    if isinstance(inputs, dict) and "data" in inputs:
        columns = inputs.get("columns")
        data = inputs["data"]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InputError("split inputs need 'columns': a list of column names")
        if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
            raise InputError("split inputs need 'data': a list of rows (lists)")
        for i, row in enumerate(data):
            if len(row) != len(columns):
                raise InputError(f"row {i} has {len(row)} values but {len(columns)} columns were named")
        if len(set(columns)) != len(columns):
            dup = next(c for c in columns if columns.count(c) > 1)
            raise InputError(f"column '{dup}' is named twice")
        frame = pd.DataFrame(data, columns=columns, dtype=object)
    elif isinstance(inputs, dict):
        frame = pd.DataFrame([inputs], dtype=object)
    elif isinstance(inputs, list):
        if not inputs:
            raise InputError("'inputs' is empty: send at least one row")
        for i, rec in enumerate(inputs):
            if not isinstance(rec, dict):
                raise InputError(
                    f"row {i} is {type(rec).__name__}, expected an object of column: value "
                    "(or send {'columns': [...], 'data': [[...]]})"
                )
        frame = pd.DataFrame.from_records(inputs)
        frame = frame.astype(object)
    else:
        raise InputError(
            f"'inputs' must be a list of records or {{'columns': [...], 'data': [[...]]}}, got {type(inputs).__name__}"
        )
    if frame.empty and not len(frame.columns):
        raise InputError("'inputs' is empty: send at least one row")
    got = list(frame.columns)
    missing = [n for n in names if n not in got]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"missing column '{missing[0]}'{more}")
    unknown = [c for c in got if c not in names]
    if unknown:
        raise InputError(f"unknown column '{unknown[0]}'; expected columns: {', '.join(names)}")
    return frame[names]


def _numeric(name: str, values: pd.Series, kind: str) -> pd.Series:
    raw = values.to_numpy(dtype=object)
    is_bool = np.fromiter((isinstance(v, bool) for v in raw), dtype=bool, count=len(raw))
    is_str = np.fromiter((isinstance(v, str) for v in raw), dtype=bool, count=len(raw))
    bad = is_bool | is_str
    if not bad.any():
        try:
            out = pd.to_numeric(values, errors="coerce")
        except (TypeError, ValueError):
            out = pd.Series(np.nan, index=values.index)
        bad = out.isna().to_numpy() & values.notna().to_numpy()
    if bad.any():
        row = _row_of(bad)
        raise InputError(f"column '{name}': expected a number, got {raw[row]!r} (row {row})")
    if kind == "integer":
        filled = out.dropna()
        frac = (filled % 1 != 0).to_numpy()
        if frac.any():
            row = _row_of((out % 1 != 0).fillna(False).to_numpy())
            raise InputError(f"column '{name}': expected an integer, got {raw[row]!r} (row {row})")
    return out


def _column(name: str, values: pd.Series, spec: dict[str, Any]) -> pd.Series:
    kind = spec["kind"]
    nulls = values.isna().to_numpy()
    if nulls.any() and not spec.get("nullable", True):
        raise InputError(
            f"column '{name}': missing value in row {_row_of(nulls)} (the sample had no missing values in this column)"
        )
    dtype = spec["dtype"]
    if kind in ("integer", "float"):
        out = _numeric(name, values, kind)
        if kind == "integer" and nulls.any():
            return out.astype("float64")
        return out.astype(dtype)
    if kind == "bool":
        ok = values.map(lambda v: isinstance(v, bool) or v is None).to_numpy()
        if not ok.all():
            row = _row_of(~ok)
            raise InputError(f"column '{name}': expected true or false, got {values.iloc[row]!r} (row {row})")
        return values.astype(dtype) if not nulls.any() else values
    if kind in ("string", "category"):
        ok = values.map(lambda v: isinstance(v, str) or v is None).to_numpy()
        if not ok.all():
            row = _row_of(~ok)
            raise InputError(f"column '{name}': expected a string, got {values.iloc[row]!r} (row {row})")
        if kind == "category":
            cats = spec.get("categories") or []
            unknown = ~values.isin(cats).to_numpy() & ~nulls
            if unknown.any():
                row = _row_of(unknown)
                raise InputError(
                    f"column '{name}': unknown category {values.iloc[row]!r} (row {row}); "
                    f"known: {', '.join(map(str, cats[:10]))}"
                )
            return values.astype(pd.CategoricalDtype(cats, ordered=spec.get("ordered", False)))
        return values.astype(dtype) if dtype != "object" else values
    if kind == "datetime":
        out = pd.to_datetime(values, errors="coerce", utc=spec.get("utc", False))
        bad = out.isna().to_numpy() & ~nulls
        if bad.any():
            row = _row_of(bad)
            raise InputError(f"column '{name}': expected a date/time, got {values.iloc[row]!r} (row {row})")
        try:
            return out.astype(dtype)
        except (TypeError, ValueError):
            return out
    return values


def to_model_input(inputs: Any, schema: dict[str, Any]) -> pd.DataFrame | np.ndarray:
    """Validate ``inputs`` against ``schema`` and return the model's input."""
    if schema["kind"] == "ndarray":
        return _array(inputs, schema)
    specs = schema["columns"]
    names = [c["name"] for c in specs]
    frame = _frame(inputs, names)
    return pd.DataFrame(
        {c["name"]: _column(c["name"], frame[c["name"]], c) for c in specs},
        index=pd.RangeIndex(len(frame)),
    )


def _array(inputs: Any, schema: dict[str, Any]) -> np.ndarray:
    width = schema["n_features"]
    if isinstance(inputs, dict) and "data" in inputs:
        inputs = inputs["data"]
    if not isinstance(inputs, list) or not inputs:
        raise InputError(f"'inputs' must be a non-empty list of rows of {width} numbers")
    for i, row in enumerate(inputs):
        if not isinstance(row, list) or len(row) != width:
            n = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(f"row {i}: expected a list of {width} values, got {n}")
        for j, v in enumerate(row):
            if isinstance(v, (bool, str)) or not (v is None or isinstance(v, (int, float))):
                raise InputError(f"feature {j}: expected a number, got {v!r} (row {i})")
    arr = np.array(inputs, dtype="float64")
    if np.isnan(arr).any() and not schema.get("nullable", True):
        i, j = map(int, np.argwhere(np.isnan(arr))[0])
        raise InputError(f"feature {j}: missing value in row {i} (the sample had none)")
    return arr.astype(schema["dtype"])
