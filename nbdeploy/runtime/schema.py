"""Turn a request's ``inputs`` into exactly the frame the model saw in the notebook, or say why not.

Columns are checked as plain Python lists (one ``set(map(type, ...))`` per column, then one numpy
conversion), so a one-row request costs tens of microseconds, and every refusal names the column
and row so the caller can fix the request without reading server logs.

Columns whose dtype is not NumPy's (nullable ``Int64``/``Float64``/``boolean``, ``string``/``str``, pyarrow-backed,
categories of numbers) carry ``ext`` in their spec: they are checked by kind as any column, then built in the exact
dtype the schema records (``target_dtype``). Plain NumPy columns never reach that code, so they cost what they did.
Non-string column labels travel as text and are mapped back (``labels``); a schema captured from a polars frame
hands the model a polars frame (polars is imported only then).
"""

from __future__ import annotations

import base64
import io
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: The kinds a column can have; the capture side infers them from the sample.
KINDS = ("integer", "float", "bool", "string", "category", "datetime", "timedelta", "object")

_NONE = type(None)
_NUMBER = {int, float, _NONE}
_ALLOWED: dict[str, set[type]] = {
    "integer": _NUMBER,
    "float": _NUMBER,
    "bool": {bool, _NONE},
    "string": {str, _NONE},
    "category": {str, _NONE},
    "datetime": {str, int, float, _NONE},
    "timedelta": {str, int, float, _NONE},
}
_EXPECTED = {
    "integer": "a number",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "category": "a string",
    "datetime": "a date/time",
    "timedelta": "a duration",
}
#: How an object column's missing value was written in the notebook; JSON null is the column's ``na`` marker
#: (None unless the sample said otherwise), and the split form's ``na`` map names rows with another one.
MARKERS: dict[str, Any] = {"None": None, "nan": float("nan"), "NA": pd.NA, "NaT": pd.NaT}


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


def _na_map(inputs: dict[str, Any], n: int) -> dict[str, dict[str, list[int]]]:
    """The split form's ``na``: {column: {marker: [rows]}}, for object columns whose missing values differ."""
    na = inputs.get("na")
    if na is None:
        return {}
    if not isinstance(na, dict):
        raise InputError("'na' must map column names to {marker: [rows]}")
    for column, markers in na.items():
        if not isinstance(markers, dict):
            raise InputError(f"'na' for column {shown(column)} must be {{marker: [rows]}}")
        for marker, rows in markers.items():
            if marker not in MARKERS:
                raise InputError(f"'na' for column {shown(column)}: unknown marker {shown(marker)}")
            if not isinstance(rows, list) or not all(type(r) is int and 0 <= r < n for r in rows):
                raise InputError(f"'na' for column {shown(column)}: {marker} needs a list of row numbers below {n}")
    return na


def _columns(inputs: Any, names: list[str]) -> tuple[dict[str, Sequence[Any]], int, dict[str, dict[str, list[int]]]]:
    na: dict[str, dict[str, list[int]]] = {}
    if isinstance(inputs, dict) and "data" in inputs:
        got, values, n = _split_columns(inputs, names)
        na = _na_map(inputs, n)
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
    return dict(zip(got, values, strict=True)), n, na


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


def _first_or_none(values: Sequence[Any], bad: Any) -> int | None:
    return next((i for i, v in enumerate(values) if bad(v)), None)


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


def _column(name: str, values: Sequence[Any], spec: dict[str, Any], na: dict[str, list[int]] | None = None) -> Any:
    kind, dtype = spec["kind"], spec["dtype"]
    if "ext" in spec:
        return _ext_column(name, values, spec)
    types = set(map(type, values))
    if kind == "category":
        return _category(name, values, spec, types)
    if kind == "object" or (kind == "string" and dtype == "object"):
        return _objects(name, values, spec, types, na)
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
        return pd.array(list(values), dtype=dtype)
    if kind == "datetime":
        return _datetimes(name, values, spec, dtype)
    if kind == "timedelta":
        return _timedeltas(name, values, dtype)
    return _object_array(values)


def _nulls(values: Sequence[Any]) -> np.ndarray:
    """Where a value is missing: None, or a float NaN (JSON's NaN, or a NaN from a frame)."""
    return np.fromiter((v is None or (type(v) is float and math.isnan(v)) for v in values), bool, len(values))


def _bad_parse(name: str, values: Sequence[Any], parsed: pd.Series, what: str) -> None:
    bad = parsed.isna().to_numpy() & ~_nulls(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"column '{name}': expected {what}, got {shown(values[row])} (row {row})")


def _datetimes(name: str, values: Sequence[Any], spec: dict[str, Any], dtype: Any) -> Any:
    """ISO strings (or epoch nanoseconds) to the column's datetime64 unit and zone; a zone keeps its array."""
    utc = spec.get("utc", False)
    try:  # ISO 8601 whatever the precision of each value (pandas would guess one format from the first)
        out = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=utc, format="ISO8601")
    except (TypeError, ValueError, OverflowError):  # pandas raises on some mixes even with errors="coerce"
        out = pd.Series([pd.NaT] * len(values), dtype="datetime64[ns, UTC]" if utc else "datetime64[ns]")
    retry = np.flatnonzero(out.isna().to_numpy() & ~_nulls(values))
    if len(retry):  # other spellings ("2026/01/02", epoch nanoseconds), one by one
        out = out.astype(object)
        for i in retry.tolist():
            out.iat[i] = _one_datetime(values[i], spec)
        out = pd.to_datetime(out, utc=utc)
    _bad_parse(name, values, out, "a date/time")
    try:
        out = out.astype(dtype)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"column '{name}': a date/time does not fit in {dtype}") from None
    return out.array if isinstance(out.dtype, pd.DatetimeTZDtype) else out.to_numpy()


def _one_datetime(value: Any, spec: dict[str, Any]) -> Any:
    try:
        return pd.to_datetime(value, utc=spec.get("utc", False))
    except (TypeError, ValueError, OverflowError):
        return pd.NaT


def _timedeltas(name: str, values: Sequence[Any], dtype: Any) -> np.ndarray:
    """Durations as pandas writes them ("1 days 00:00:01.5"), ISO 8601, or integer nanoseconds."""
    try:
        out = pd.to_timedelta(pd.Series(values, dtype=object), errors="coerce")
    except (TypeError, ValueError, OverflowError):
        out = pd.Series([_one_timedelta(v) for v in values], dtype="timedelta64[ns]")
    _bad_parse(name, values, out, "a duration")
    try:
        return out.astype(dtype).to_numpy()
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"column '{name}': a duration does not fit in {dtype}") from None


def _one_timedelta(value: Any) -> Any:
    try:
        return pd.to_timedelta(value)
    except (TypeError, ValueError, OverflowError):
        return pd.NaT


def _object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array even when every value is a list of one length (np.array would make it 2-D)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _objects(
    name: str, values: Sequence[Any], spec: dict[str, Any], types: set[type], na: dict[str, list[int]] | None
) -> np.ndarray:
    """An object column: strings (kind "string") or any JSON value, with each missing value's own marker."""
    if spec["kind"] == "string" and not types <= {str, _NONE}:
        row = _first(values, lambda v: type(v) not in (str, _NONE))
        raise InputError(f"column '{name}': expected a string, got {shown(values[row])} (row {row})")
    out = _object_array(values) if types != {str} else np.array(values, dtype=object)
    if _NONE not in types:
        return out
    if not spec.get("nullable", True):
        raise _missing(name, _first(values, lambda v: v is None))
    default = spec.get("na", "None")
    if default != "None":
        out[out == None] = MARKERS[default]  # noqa: E711  (elementwise: the nulls of the request)
    for marker, rows in (na or {}).items():
        idx = [r for r in rows if values[r] is None]
        out[idx] = MARKERS[marker] if marker != "None" else None
    return out


def _category(name: str, values: Sequence[Any], spec: dict[str, Any], types: set[type]) -> Any:
    """Categories of strings or numbers (ordered or not); a value outside them is refused by name."""
    cats = spec.get("categories") or []
    known = set(cats)
    allowed = {type(c) for c in cats} | {_NONE}
    if int in allowed or float in allowed:
        allowed |= {int, float}
    if not types <= allowed:
        row = _first(values, lambda v: type(v) not in allowed)
        raise InputError(f"column '{name}': expected a category, got {shown(values[row])} (row {row})")
    missing = _nulls(values) if float in types else None
    if missing is not None and missing.any():
        values = [None if m else v for v, m in zip(values, missing, strict=True)]
    if _NONE in set(map(type, values)) and not spec.get("nullable", True):
        raise _missing(name, _first(values, lambda v: v is None))
    if not set(values) - {None} <= known:
        row = _first(values, lambda v: v is not None and v not in known)
        listed = ", ".join(map(str, cats[:10]))
        raise InputError(f"column '{name}': unknown category {shown(values[row])} (row {row}); known: {listed}")
    if "categories_dtype" not in spec:
        return pd.Categorical(values, categories=cats, ordered=spec.get("ordered", False))
    return pd.Categorical(values, dtype=target_dtype(spec))


_DTYPES: dict[tuple[Any, ...], Any] = {}


def target_dtype(spec: dict[str, Any]) -> Any:
    """The column's exact dtype as the schema records it (pyarrow is imported only for a pyarrow column)."""
    if spec["kind"] == "category":
        cats = pd.Index(spec.get("categories") or [], dtype=spec.get("categories_dtype"))
        return pd.CategoricalDtype(cats, ordered=spec.get("ordered", False))
    key = (spec["dtype"], spec.get("ext"), spec.get("arrow"), spec.get("storage"), spec.get("na_value"))
    found = _DTYPES.get(key)
    if found is None:
        ext = spec.get("ext")
        if ext == "arrow":
            import pyarrow as pa

            arrow = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(spec["arrow"]))).field(0).type
            found = pd.ArrowDtype(arrow)
        elif ext == "string":
            na_value = np.nan if spec.get("na_value") == "nan" else pd.NA
            storage = spec.get("storage", "python")
            if storage == "pyarrow" and na_value is not pd.NA and not _has_pyarrow():
                storage = "python"  # pandas' default "str": the same dtype to the model, without pyarrow
            found = pd.StringDtype(storage, na_value=na_value)
        else:
            found = pd.api.types.pandas_dtype(spec["dtype"])
        _DTYPES[key] = found
    return found


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _ext_column(name: str, values: Sequence[Any], spec: dict[str, Any]) -> Any:
    """A column in a dtype beyond NumPy's: checked by kind as a plain column is, then built in that dtype."""
    kind = spec["kind"]
    dtype = target_dtype(spec)
    types = set(map(type, values))
    allowed = _ALLOWED.get(kind)
    if allowed is not None and not types <= allowed:
        row = _first(values, lambda v: type(v) not in allowed)
        raise InputError(f"column '{name}': expected {_EXPECTED[kind]}, got {shown(values[row])} (row {row})")
    if types & {_NONE, float} and not spec.get("nullable", True):
        missing = _nulls(values)
        if missing.any():
            raise _missing(name, int(np.flatnonzero(missing)[0]))
    if kind == "float" and float in types:
        arr = np.array([np.nan if v is None else v for v in values], dtype="float64")
        if np.isinf(arr).any():
            row = int(np.flatnonzero(np.isinf(arr))[0])
            raise InputError(f"column '{name}': expected a finite number, got {shown(values[row])} (row {row})")
    if kind in ("datetime", "timedelta"):
        if kind == "datetime":
            logical = _datetimes(name, values, spec, "datetime64[ns, UTC]" if spec.get("utc") else "datetime64[ns]")
        else:
            logical = _timedeltas(name, values, "timedelta64[ns]")
        return _cast(name, pd.Series(logical), dtype, values)
    if kind == "integer" and float in types:
        frac = _first_or_none(values, lambda v: type(v) is float and not math.isnan(v) and not v.is_integer())
        if frac is not None:
            raise InputError(f"column '{name}': expected an integer, got {shown(values[frac])} (row {frac})")
    if kind in ("integer", "float", "bool") and float in types:
        values = [None if type(v) is float and math.isnan(v) else v for v in values]
    try:
        return pd.array(list(values), dtype=dtype)
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        raise _unfit(name, values, dtype) from None


def _cast(name: str, logical: pd.Series, dtype: Any, values: Sequence[Any]) -> Any:
    try:
        return logical.astype(dtype).array
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        raise _unfit(name, values, dtype) from None


def _unfit(name: str, values: Sequence[Any], dtype: Any) -> InputError:
    """Which value the dtype refused: tried alone, row by row (only on this error path)."""
    for row, value in enumerate(values):
        try:
            pd.array([value], dtype=dtype)
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            return InputError(f"column '{name}': {shown(value)} does not fit in {dtype} (row {row})")
    return InputError(f"column '{name}': the values do not fit in {dtype}")


def count_rows(inputs: Any) -> int:
    """Rows in a request, before any validation (for the rows-per-request limit)."""
    if isinstance(inputs, dict):
        data = inputs.get("data")
        return len(data) if isinstance(data, list) else 1
    return len(inputs) if isinstance(inputs, list) else 0


def to_model_input(inputs: Any, schema: dict[str, Any]) -> Any:
    """Validate ``inputs`` against ``schema`` and return the model's input (a DataFrame, an array, or a polars
    frame when the sample was one)."""
    if schema["kind"] == "ndarray":
        return _array(inputs, schema)
    specs = schema["columns"]
    by_name, n, na = _columns(inputs, [c["name"] for c in specs])
    columns = [_column(c["name"], by_name[c["name"]], c, na.get(c["name"])) for c in specs]
    return _finish(_frame([c["name"] for c in specs], columns, n), schema)


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
    index = pd.RangeIndex(n)
    data = {
        name: pd.Series(c, index=index, dtype=object, copy=False)  # pandas would infer "str" from object strings
        if isinstance(c, np.ndarray) and c.dtype == object
        else c
        for name, c in zip(names, columns, strict=True)
    }
    return pd.DataFrame(data, index=index)


def _finish(frame: pd.DataFrame, schema: dict[str, Any]) -> Any:
    """The frame under the sample's own column labels, in the sample's library."""
    if schema.get("library") == "polars":
        return _to_polars(frame, schema)
    if "labels" in schema:
        frame.columns = column_index(schema["labels"])
    return frame


def label(encoded: Any) -> Any:
    """A column label as the sample had it: strings as they are, others as [type, value] (JSON has no int keys)."""
    if not isinstance(encoded, list):
        return encoded
    tag, value = encoded
    if tag == "tuple":
        return tuple(label(v) for v in value)
    if tag == "none":
        return None
    return {"int": int, "float": float, "bool": bool, "str": str}[tag](value)


def column_index(labels: dict[str, Any]) -> pd.Index:
    """The sample's columns index: a RangeIndex stays one (``pd.DataFrame(array)``), a MultiIndex too."""
    if labels.get("range"):
        return pd.RangeIndex(*labels["range"])
    values = [label(v) for v in labels["values"]]
    if labels.get("multi"):
        return pd.MultiIndex.from_tuples(values)
    return pd.Index(values, dtype=labels.get("dtype"), tupleize_cols=False)


def is_polars(data: Any) -> bool:
    """A polars DataFrame, told without importing polars (the service needs it only for a polars schema)."""
    return type(data).__name__ == "DataFrame" and type(data).__module__.partition(".")[0] == "polars"


_POLARS_NUMPY = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float32", "Float64"}


def from_polars(data: Any) -> pd.DataFrame:
    """A polars frame as the pandas frame that stands for it on the wire and in the schema: numbers without nulls
    as NumPy, with nulls as nullable ``Int64``/``Float64``/``boolean`` (null stays apart from NaN), strings and lists
    as objects, Enum as categories, dates and durations as datetime64/timedelta64. Refuses what cannot travel."""
    import polars as pl

    out: dict[str, Any] = {}
    for s in data.get_columns():
        dt, nulls = s.dtype, s.null_count() > 0
        base = str(dt.base_type()) if hasattr(dt, "base_type") else str(dt)
        if base in _POLARS_NUMPY:
            out[s.name] = pd.array(s.to_list(), dtype=base) if nulls else s.to_numpy()
        elif base == "Boolean":
            out[s.name] = pd.array(s.to_list(), dtype="boolean") if nulls else s.to_numpy().astype(bool)
        elif base in ("String", "Categorical", "List", "Array"):
            out[s.name] = _object_array(s.to_list())
        elif base == "Enum":
            out[s.name] = pd.Categorical(s.cast(pl.String).to_list(), categories=dt.categories.to_list())
        elif base == "Datetime":
            tz = dt.time_zone
            naive = s.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if tz else s
            arr = pd.Series(naive.to_numpy())
            out[s.name] = arr.dt.tz_localize("UTC").dt.tz_convert(tz).array if tz else arr.to_numpy()
        elif base == "Date":
            out[s.name] = s.cast(pl.Datetime("ms")).to_numpy()
        elif base == "Duration":
            out[s.name] = s.to_numpy()
        else:
            raise InputError(f"column '{s.name}' has polars dtype {dt}, which nbdeploy cannot carry to the service")
    return pd.DataFrame(out, index=pd.RangeIndex(data.height))


_POLARS: dict[str, Any] = {}


def _polars_schema(schema: dict[str, Any]) -> Any:
    """The sample's polars schema, read once from the empty IPC frame capture recorded."""
    key = schema["polars"]
    found = _POLARS.get(key)
    if found is None:
        import polars as pl

        found = _POLARS[key] = pl.read_ipc(io.BytesIO(base64.b64decode(key))).schema
    return found


def _to_polars(frame: pd.DataFrame, schema: dict[str, Any]) -> Any:
    """The validated pandas frame as the polars frame the model took in the notebook (dtypes from the schema)."""
    import polars as pl

    target = _polars_schema(schema)
    series = []
    for name, dt in target.items():
        col = frame[name]
        base = str(dt.base_type())
        if base in _POLARS_NUMPY or base == "Boolean":
            values = col.to_numpy() if not col.hasnans else col.astype(object).where(col.notna(), None).tolist()
            series.append(pl.Series(name, values).cast(dt))
        elif base in ("Datetime", "Date"):
            utc = col.dt.tz_convert("UTC").dt.tz_localize(None) if col.dt.tz is not None else col
            s = pl.Series(name, utc.to_numpy())
            if base == "Datetime" and dt.time_zone:
                s = s.dt.replace_time_zone("UTC")
            series.append(s.cast(dt))
        elif base == "Duration":
            series.append(pl.Series(name, col.to_numpy()).cast(dt))
        else:  # strings, categories, enums, lists: Python values, nulls as None
            values = [None if v is None or v is pd.NA or (type(v) is float and math.isnan(v)) else v for v in col]
            series.append(pl.Series(name, values, dtype=dt))
    return pl.DataFrame(series)


def names_warning(names: Sequence[Any] | None, schema: dict[str, Any]) -> str | None:
    """Why named columns sent to a model deployed with an unnamed array sample may be in the wrong order: they are
    taken by position. None when the schema knows the names (they are mapped) or the names are positions."""
    if schema.get("kind") != "ndarray" or schema.get("feature_names") or not names:
        return None
    if [str(n) for n in names] == [str(i) for i in range(len(names))]:
        return None
    listed = ", ".join(map(str, list(names)[:5])) + (", …" if len(names) > 5 else "")
    return (
        f"the model was deployed with an unnamed array sample, so the named columns sent ({listed}) are taken by "
        "position, not by name: send them in the training order (X.to_numpy()), or redeploy with a DataFrame sample"
    )


def input_warning(inputs: Any, schema: dict[str, Any]) -> str | None:
    """``names_warning`` for a JSON request (the split form names its columns)."""
    if isinstance(inputs, dict) and isinstance(inputs.get("columns"), list):
        return names_warning(inputs["columns"], schema)
    return None


def arrays_to_model_input(names: list[str], arrays: list[np.ndarray], schema: dict[str, Any]) -> Any:
    """As ``to_model_input``, for columns that arrived as arrays (``frames``): checks by dtype, not per value.
    A masked array (``frames.decode``) marks missing values of columns whose dtype has no NaN."""
    n = len(arrays[0]) if arrays else 0
    if n == 0:
        raise InputError("the frame is empty: send at least one row")
    if schema["kind"] == "ndarray":
        if schema.get("feature_names") and names != [str(i) for i in range(len(names))]:
            _check_names(names, schema["feature_names"])
            by = dict(zip(names, arrays, strict=True))
            arrays = [by[f] for f in schema["feature_names"]]
        return _stacked(arrays, schema)
    specs = schema["columns"]
    _check_names(names, [c["name"] for c in specs])
    by_name = dict(zip(names, arrays, strict=True))
    columns = [_array_column(c["name"], by_name[c["name"]], c) for c in specs]
    return _finish(_frame([c["name"] for c in specs], columns, n), schema)


def _stacked(arrays: list[np.ndarray], schema: dict[str, Any]) -> np.ndarray:
    """A model trained on an array takes the frame's columns in order, as ``_array`` takes JSON rows."""
    width = schema["n_features"]
    if len(arrays) != width:
        raise InputError(f"expected {width} columns (features), got {len(arrays)}")
    for j, arr in enumerate(arrays):
        if arr.dtype.kind not in "iufb":
            raise InputError(f"feature {j}: expected a number, got an array of {arr.dtype}")
    floats = [np.ma.filled(a.astype("float64"), np.nan) if np.ma.isMaskedArray(a) else a for a in arrays]
    return _checked_matrix(np.column_stack(floats).astype("float64"), schema)


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
_FAST_KINDS = {"integer": "iuf", "float": "iuf", "bool": "b", "datetime": "M", "timedelta": "m"}


def _listed(arr: np.ndarray) -> list[Any]:
    """An array's values as JSON would carry them (ISO times, nanosecond durations), masked or NaT as None."""
    data = np.ma.getdata(arr)
    missing = np.ma.getmaskarray(arr) if np.ma.isMaskedArray(arr) else None
    if data.dtype.kind in "Mm":
        nat = np.isnat(data)
        missing = nat if missing is None else missing | nat
        values = np.datetime_as_string(data).tolist() if data.dtype.kind == "M" else _ns_durations(data)
    else:
        values = data.tolist()
    if missing is not None and missing.any():
        for i in np.flatnonzero(missing).tolist():
            values[i] = None
    return values


def _unmarked(values: list[Any]) -> tuple[list[Any], dict[str, list[int]]]:
    """Missing markers as None (what the JSON path checks), and which rows held which (to put them back)."""
    na: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        if v is None or v is pd.NA or v is pd.NaT or (type(v) is float and math.isnan(v)):
            marker = "None" if v is None else "NA" if v is pd.NA else "NaT" if v is pd.NaT else "nan"
            na.setdefault(marker, []).append(i)
            values[i] = None
    return values, na


def _ns_durations(data: np.ndarray) -> list[Any]:
    """Durations as integer nanoseconds (what ``_timedeltas`` reads exactly)."""
    return data.astype("timedelta64[ns]").astype("int64").tolist()


def _array_column(name: str, arr: np.ndarray, spec: dict[str, Any]) -> Any:
    kind, dtype = spec["kind"], spec["dtype"]
    if arr.dtype.kind == "O":  # an object column that travelled as JSON texts, with its own missing markers
        values, na = _unmarked(arr.tolist())
        return _column(name, values, spec, na)
    if "ext" in spec or np.ma.isMaskedArray(arr) or arr.dtype.kind not in _FAST_KINDS.get(kind, ""):
        # strings, categories, objects, dtypes beyond NumPy's, missing values marked by a mask, or a dtype the
        # kind does not expect: the same checks and messages as JSON
        return _column(name, _listed(arr), spec)
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
    if kind == "timedelta":
        if np.isnat(arr).any() and not spec.get("nullable", True):
            raise _missing(name, int(np.flatnonzero(np.isnat(arr))[0]))
        return arr.astype(dtype)
    out = pd.to_datetime(arr, utc=spec.get("utc", False)).astype(dtype)
    return out.array if isinstance(out.dtype, pd.DatetimeTZDtype) else out.to_numpy()


def _array(inputs: Any, schema: dict[str, Any]) -> np.ndarray:
    width = schema["n_features"]
    if schema.get("feature_names") and _named(inputs):
        return _named_array(inputs, schema)
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


def _named(inputs: Any) -> bool:
    """Columns sent by name; labels 0, 1, … (``pd.DataFrame(array)``) are positions, as scikit-learn takes them."""
    if isinstance(inputs, dict) and "data" in inputs:
        columns = inputs.get("columns")
        return isinstance(columns, list) and columns != [str(i) for i in range(len(columns))]
    return isinstance(inputs, dict) or (isinstance(inputs, list) and bool(inputs) and isinstance(inputs[0], dict))


def _named_array(inputs: Any, schema: dict[str, Any]) -> np.ndarray:
    """Named columns for a model fitted with feature names but deployed with an array sample: taken by name
    (``feature_names_in_``), never by position, so a reordered frame gets the answers it would in the notebook."""
    names: list[str] = schema["feature_names"]
    by_name, n, _ = _columns(inputs, names)
    rows: list[Sequence[Any]] = []
    for j, feature in enumerate(names):
        values = by_name[feature]
        if not set(map(type, values)) <= _NUMBER:
            i = _first(values, lambda v: type(v) not in _NUMBER)
            raise InputError(f"column '{feature}' (feature {j}): expected a number, got {shown(values[i])} (row {i})")
        rows.append(values)
    try:
        arr = np.array(rows, dtype="float64").T.reshape(n, len(names))
    except OverflowError:
        raise InputError("a feature value is too large to be a finite number") from None
    return _checked_matrix(np.ascontiguousarray(arr), schema)
