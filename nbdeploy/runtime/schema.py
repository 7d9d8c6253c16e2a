"""Turn a request's ``inputs`` into exactly the frame the model saw in the notebook, or say why not.

Columns are checked as plain Python lists (one ``set(map(type, ...))`` per column, then one numpy
conversion), so a one-row request costs tens of microseconds, and every refusal names the column
and row so the caller can fix the request without reading server logs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: The kinds a column can have; the capture side infers them from the sample.
KINDS = ("integer", "float", "bool", "string", "category", "datetime", "object")

_NONE = type(None)
_NUMBER = {int, float, _NONE}
_ALLOWED: dict[str, set[type]] = {
    "integer": _NUMBER,
    "float": _NUMBER,
    "bool": {bool, _NONE},
    "string": {str, _NONE},
    "category": {str, _NONE},
    "datetime": {str, int, float, _NONE},
}
_EXPECTED = {
    "integer": "a number",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "category": "a string",
    "datetime": "a date/time",
}


class InputError(ValueError):
    """A request the schema refuses; the message names the column or field."""


def shown(value: Any, limit: int = 80) -> str:
    """A value as echoed in an error: its repr, cut short (a request can carry megabytes in one value)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _duplicate(names: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _check_width(got: Iterable[Any], n: int, names: list[str]) -> None:
    """More columns than the model takes: name the first unknown (or repeated) one, looking at no more
    than ``len(names) + 1`` of them, so a request with a million columns costs what a normal one does."""
    if n <= len(names):
        return
    expected, seen = set(names), set()
    for name in itertools.islice(got, len(names) + 1):
        if name not in expected:
            listed = ", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
            raise InputError(f"unknown column {shown(name)}; expected columns: {listed}")
        if name in seen:
            break
        seen.add(name)
    raise InputError(f"{n} columns in the request; the model takes {len(names)}")


def _split_columns(inputs: dict[str, Any], names: list[str]) -> tuple[list[str], list[Sequence[Any]], int]:
    columns = inputs.get("columns")
    data = inputs["data"]
    if not isinstance(columns, list):
        raise InputError("split inputs need 'columns': a list of column names")
    _check_width(columns, len(columns), names)  # before anything that grows with the request
    if not all(isinstance(c, str) for c in columns):
        raise InputError("split inputs need 'columns': a list of column names")
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise InputError("split inputs need 'data': a list of rows (lists)")
    for i, row in enumerate(data):
        if len(row) != len(columns):
            raise InputError(f"row {i} has {len(row)} values but the columns name {len(columns)}")
    dup = _duplicate(columns)
    if dup is not None:
        raise InputError(f"column {shown(dup)} is named twice")
    values: list[Sequence[Any]] = list(zip(*data, strict=True)) if data else [() for _ in columns]
    return columns, values, len(data)


def _record_columns(records: list[Any], names: list[str]) -> tuple[list[str], list[Sequence[Any]], int]:
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(
                f"row {i} is {type(rec).__name__}, expected an object of column: value "
                "(or send {'columns': [...], 'data': [[...]]})"
            )
        _check_width(rec, len(rec), names)
    first = records[0].keys()
    if all(rec.keys() == first for rec in records):
        got = list(first)
    else:  # rows with differing keys: a key absent from a row is a missing value there
        seen: dict[str, None] = {}
        for rec in records:
            seen.update(dict.fromkeys(rec))
            _check_width(seen, len(seen), names)
        got = list(seen)
    return got, [[rec.get(n) for rec in records] for n in got], len(records)


def _columns(inputs: Any, names: list[str]) -> tuple[dict[str, Sequence[Any]], int]:
    if isinstance(inputs, dict) and "data" in inputs:
        got, values, n = _split_columns(inputs, names)
    elif isinstance(inputs, dict):
        got, values, n = _record_columns([inputs], names)
    elif isinstance(inputs, list):
        if not inputs:
            raise InputError("'inputs' is empty: send at least one row")
        got, values, n = _record_columns(inputs, names)
    else:
        raise InputError(
            f"'inputs' must be a list of records or {{'columns': [...], 'data': [[...]]}}, got {type(inputs).__name__}"
        )
    if n == 0:
        raise InputError("'inputs' is empty: send at least one row")
    _check_names(got, names)
    return dict(zip(got, values, strict=True)), n


def _check_names(got: list[str], names: list[str]) -> None:
    """Missing, unknown and repeated names, in time linear in the request (sets, never list lookups)."""
    _check_width(got, len(got), names)
    dup = _duplicate(got)
    if dup is not None:
        raise InputError(f"column {shown(dup)} is named twice")
    present = set(got)
    missing = [c for c in names if c not in present]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"missing column '{missing[0]}'{more}")
    expected = set(names)
    unknown = [c for c in got if c not in expected]
    if unknown:
        listed = ", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
        raise InputError(f"unknown column {shown(unknown[0])}; expected columns: {listed}")


def _first(values: Sequence[Any], bad: Any) -> int:
    return next(i for i, v in enumerate(values) if bad(v))


def _missing(name: str, row: int) -> InputError:
    return InputError(f"column '{name}': missing value in row {row} (the sample had no missing values in this column)")


def _numbers(name: str, values: Sequence[Any], spec: dict[str, Any], types: set[type]) -> np.ndarray:
    """A number column. JSON's NaN is a missing value, as None is; infinities and overflows are refused."""
    kind, dtype = spec["kind"], spec["dtype"]
    if kind == "integer" and types <= {int}:
        try:
            return np.array(values, dtype=dtype)
        except OverflowError:
            raise InputError(f"column '{name}': a value does not fit in {dtype}") from None
    try:
        arr = np.array(values, dtype="float64")
    except OverflowError:
        row = _first(values, lambda v: isinstance(v, int) and abs(v) > 2**1023)
        raise InputError(f"column '{name}': expected a finite number, got {shown(values[row])} (row {row})") from None
    return _floats(name, arr, spec, lambda row: values[row])


def _floats(name: str, arr: np.ndarray, spec: dict[str, Any], value: Any) -> np.ndarray:
    """Checks shared by JSON and .npz columns; ``value(row)`` is what the caller sent, for the message."""
    kind, dtype = spec["kind"], spec["dtype"]
    nan = np.isnan(arr)
    if not np.isfinite(arr[~nan]).all():
        row = int(np.flatnonzero(~nan & ~np.isfinite(arr))[0])
        raise InputError(f"column '{name}': expected a finite number, got {shown(value(row))} (row {row})")
    has_nan = bool(nan.any())
    if has_nan and not spec.get("nullable", True):
        raise _missing(name, int(np.flatnonzero(nan)[0]))
    if kind == "integer":
        frac = ~nan & (arr % 1 != 0)
        if frac.any():
            row = int(np.flatnonzero(frac)[0])
            raise InputError(f"column '{name}': expected an integer, got {shown(value(row))} (row {row})")
        return arr if has_nan else arr.astype(dtype)
    return arr.astype(dtype, copy=False)


def _column(name: str, values: Sequence[Any], spec: dict[str, Any]) -> Any:
    kind, dtype = spec["kind"], spec["dtype"]
    types = set(map(type, values))
    allowed = _ALLOWED.get(kind)
    if allowed is not None and not types <= allowed:
        row = _first(values, lambda v: type(v) not in allowed)
        raise InputError(f"column '{name}': expected {_EXPECTED[kind]}, got {shown(values[row])} (row {row})")
    has_null = _NONE in types
    if has_null and not spec.get("nullable", True):
        raise _missing(name, _first(values, lambda v: v is None))
    if kind in ("integer", "float"):
        return _numbers(name, values, spec, types)
    if kind == "bool":
        return np.array(values, dtype=bool) if not has_null else np.array(values, dtype=object)
    if kind == "string":
        return pd.array(list(values), dtype=dtype) if dtype != "object" else np.array(values, dtype=object)
    if kind == "category":
        cats = spec.get("categories") or []
        known = set(cats)
        if not set(values) - {None} <= known:
            row = _first(values, lambda v: v is not None and v not in known)
            listed = ", ".join(map(str, cats[:10]))
            raise InputError(f"column '{name}': unknown category {shown(values[row])} (row {row}); known: {listed}")
        return pd.Categorical(values, categories=cats, ordered=spec.get("ordered", False))
    if kind == "datetime":
        out = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=spec.get("utc", False))
        bad = out.isna().to_numpy() & np.fromiter((v is not None for v in values), bool, len(values))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"column '{name}': expected a date/time, got {shown(values[row])} (row {row})")
        try:
            return out.astype(dtype).to_numpy()
        except (TypeError, ValueError):
            return out.to_numpy()
    return np.array(values, dtype=object)


def count_rows(inputs: Any) -> int:
    """Rows in a request, before any validation (for the rows-per-request limit)."""
    if isinstance(inputs, dict):
        data = inputs.get("data")
        return len(data) if isinstance(data, list) else 1
    return len(inputs) if isinstance(inputs, list) else 0


def to_model_input(inputs: Any, schema: dict[str, Any]) -> pd.DataFrame | np.ndarray:
    """Validate ``inputs`` against ``schema`` and return the model's input."""
    if schema["kind"] == "ndarray":
        return _array(inputs, schema)
    specs = schema["columns"]
    by_name, n = _columns(inputs, [c["name"] for c in specs])
    return _frame([c["name"] for c in specs], [_column(c["name"], by_name[c["name"]], c) for c in specs], n)


def _frame(names: list[str], columns: list[Any], n: int) -> pd.DataFrame:
    """One block when every column is a numpy array of one dtype (the usual numeric model): 5x faster to build
    than a frame from a dict, which matters for one-row requests."""
    first = columns[0] if columns else None
    if (
        isinstance(first, np.ndarray)
        and first.dtype != object
        and all(isinstance(c, np.ndarray) and c.dtype == first.dtype for c in columns)
    ):
        return pd.DataFrame(np.column_stack(columns), columns=names, index=pd.RangeIndex(n))
    return pd.DataFrame(dict(zip(names, columns, strict=True)), index=pd.RangeIndex(n))


def arrays_to_model_input(
    names: list[str], arrays: list[np.ndarray], schema: dict[str, Any]
) -> pd.DataFrame | np.ndarray:
    """As ``to_model_input``, for columns that arrived as arrays (``frames``): checks by dtype, not per value."""
    n = len(arrays[0]) if arrays else 0
    if n == 0:
        raise InputError("the frame is empty: send at least one row")
    if schema["kind"] == "ndarray":
        return _stacked(arrays, schema)
    specs = schema["columns"]
    _check_names(names, [c["name"] for c in specs])
    by_name = dict(zip(names, arrays, strict=True))
    return _frame([c["name"] for c in specs], [_array_column(c["name"], by_name[c["name"]], c) for c in specs], n)


def _stacked(arrays: list[np.ndarray], schema: dict[str, Any]) -> np.ndarray:
    """A model trained on an array takes the frame's columns in order, as ``_array`` takes JSON rows."""
    width = schema["n_features"]
    if len(arrays) != width:
        raise InputError(f"expected {width} columns (features), got {len(arrays)}")
    for j, arr in enumerate(arrays):
        if arr.dtype.kind not in "iuf":
            raise InputError(f"feature {j}: expected a number, got an array of {arr.dtype}")
    return _checked_matrix(np.column_stack(arrays).astype("float64"), schema)


def _checked_matrix(out: np.ndarray, schema: dict[str, Any]) -> np.ndarray:
    """A model trained on an array: no infinities, and NaN (missing) only where the sample had some."""
    if np.isinf(out).any():
        i, j = map(int, np.argwhere(np.isinf(out))[0])
        raise InputError(f"feature {j}: expected a finite number, got {out[i, j]} (row {i})")
    if not schema.get("nullable", True) and np.isnan(out).any():
        i, j = map(int, np.argwhere(np.isnan(out))[0])
        raise InputError(f"feature {j}: missing value in row {i} (the sample had none)")
    return out.astype(schema["dtype"], copy=False)


#: Column kinds with a fast path for arrays of these numpy kinds; everything else takes the JSON path's checks.
_FAST_KINDS = {"integer": "iuf", "float": "iuf", "bool": "b", "datetime": "M"}


def _array_column(name: str, arr: np.ndarray, spec: dict[str, Any]) -> Any:
    kind, dtype = spec["kind"], spec["dtype"]
    if arr.dtype.kind not in _FAST_KINDS.get(kind, ""):
        # strings, categories, objects, or a dtype the kind does not expect: the same checks and messages as JSON
        return _column(name, arr.tolist(), spec)
    if arr.dtype.kind == "f" and kind in ("integer", "float"):
        return _floats(name, arr, spec, lambda row: arr[row].item())
    if kind in ("integer", "float"):
        if kind == "integer" and arr.dtype.kind in "iu":
            info = np.iinfo(dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise InputError(f"column '{name}': a value does not fit in {dtype}")
        return arr.astype(dtype, copy=False)
    if kind == "bool":
        return arr
    return pd.to_datetime(arr, utc=spec.get("utc", False)).astype(dtype).to_numpy()


def _array(inputs: Any, schema: dict[str, Any]) -> np.ndarray:
    width = schema["n_features"]
    if isinstance(inputs, dict) and "data" in inputs:
        inputs = inputs["data"]
    if not isinstance(inputs, list) or not inputs:
        raise InputError(f"'inputs' must be a non-empty list of rows of {width} numbers")
    for i, row in enumerate(inputs):
        if not isinstance(row, list) or len(row) != width:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(f"row {i}: expected a list of {width} values, got {got}")
        if not set(map(type, row)) <= _NUMBER:
            j = _first(row, lambda v: type(v) not in _NUMBER)
            raise InputError(f"feature {j}: expected a number, got {shown(row[j])} (row {i})")
    try:
        arr = np.array(inputs, dtype="float64")
    except OverflowError:
        raise InputError("a feature value is too large to be a finite number") from None
    return _checked_matrix(arr, schema)
