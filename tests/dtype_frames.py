"""Frames over the pandas dtypes users meet, and what a model reports it received: shared by the dtype tests.

``frame(seed, n)`` draws one frame of the fixed set of columns ``COLUMNS`` (so one deployed schema takes them all),
with random values and random missing values where the dtype has them; ``report(df)`` is what a model sees: dtypes
as text, labels, each value's type and repr, and which missing marker (None, NaN, NA, NaT) each row holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

Maker = Callable[[np.random.Generator, int], Any]


def _holes(rng: np.random.Generator, n: int, first: bool) -> np.ndarray:
    """Where values are missing: about one in four, and always row 0 when ``first`` (so the sample is nullable)."""
    holes = rng.random(n) < 0.25
    if first:
        holes[0] = True
    return holes


def _ints(rng: np.random.Generator, n: int, dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=n, dtype=dtype, endpoint=True)


def _floats(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=n) * 10.0 ** rng.integers(-5, 12, size=n)


def _times(rng: np.random.Generator, n: int, unit: str = "ns") -> pd.DatetimeIndex:
    ns = rng.integers(946_684_800 * 10**9, 1_900_000_000 * 10**9, size=n)
    return pd.to_datetime(ns, unit="ns").as_unit(unit).floor({"s": "s", "ms": "ms", "us": "us", "ns": "ns"}[unit])


def _words(rng: np.random.Generator, n: int) -> list[str]:
    alphabet = ["a", "b", "é", "☃", " ", "NaN", "None", "", "0"]
    return ["".join(rng.choice(alphabet, size=rng.integers(0, 4))) for _ in range(n)]


def _masked(values: Any, holes: np.ndarray, dtype: Any) -> pd.Series:
    s = pd.Series(values).astype(object)
    s[holes] = None
    return pd.Series(s.tolist(), dtype=dtype)


def _make(first: bool) -> dict[Any, Maker]:
    """Column label -> maker; ``first`` puts a missing value in row 0 of each nullable column (the sample)."""

    def h(rng: np.random.Generator, n: int) -> np.ndarray:
        return _holes(rng, n, first)

    def with_nan(rng: np.random.Generator, n: int, values: np.ndarray) -> np.ndarray:
        values = values.astype("float64")
        values[h(rng, n)] = np.nan
        return values

    def obj(rng: np.random.Generator, n: int, marker: Any) -> pd.Series:
        s = pd.Series(_words(rng, n), dtype=object)
        s[h(rng, n)] = marker
        return s

    def mixed(rng: np.random.Generator, n: int) -> pd.Series:
        pool: list[Any] = [None, np.nan, 1, -2.5, "x", True, [1, "a"], {"k": [1.5]}]
        out = [pool[i] for i in rng.integers(0, len(pool), size=n)]
        if first:
            out[0], out[1 % n] = None, np.nan
        return pd.Series(out, dtype=object)

    def lists(rng: np.random.Generator, n: int, width: int | None) -> pd.Series:
        out: list[Any] = [rng.integers(-5, 5, size=width or rng.integers(0, 4)).tolist() for _ in range(n)]
        return pd.Series(out, dtype=object)

    def cat(rng: np.random.Generator, n: int, cats: list[Any], ordered: bool = False) -> pd.Series:
        values = [cats[i] for i in rng.integers(0, len(cats), size=n)]
        s = pd.Series(pd.Categorical(values, categories=cats, ordered=ordered))
        s[h(rng, n)] = np.nan
        return s

    def times(rng: np.random.Generator, n: int, unit: str, tz: str | None) -> pd.Series:
        s = pd.Series(_times(rng, n, unit))
        s[h(rng, n)] = pd.NaT
        return s.dt.tz_localize("UTC").dt.tz_convert(tz) if tz else s

    def deltas(rng: np.random.Generator, n: int) -> pd.Series:
        s = pd.Series(pd.to_timedelta(rng.integers(-(10**15), 10**15, size=n), unit="ns"))
        s[h(rng, n)] = pd.NaT
        return s

    def arrow(rng: np.random.Generator, n: int, values: Any, t: pa.DataType) -> pd.Series:
        holes = h(rng, n)
        items = [None if m else v for v, m in zip(list(values), holes, strict=True)]
        return pd.Series(pd.array(items, dtype=pd.ArrowDtype(t)))

    return {
        "i8": lambda r, n: _ints(r, n, "int8"),
        "i16": lambda r, n: _ints(r, n, "int16"),
        "i32": lambda r, n: _ints(r, n, "int32"),
        "i64": lambda r, n: _ints(r, n, "int64"),
        "u8": lambda r, n: _ints(r, n, "uint8"),
        "u64": lambda r, n: _ints(r, n, "uint64"),
        "f32": lambda r, n: with_nan(r, n, _floats(r, n)).astype("float32"),
        "f64": lambda r, n: with_nan(r, n, _floats(r, n)),
        "b": lambda r, n: r.random(n) < 0.5,
        "obj_none": lambda r, n: obj(r, n, None),
        "obj_nan": lambda r, n: obj(r, n, np.nan),
        "str": lambda r, n: pd.Series(obj(r, n, None).tolist(), dtype="str"),
        "string_py": lambda r, n: pd.Series(obj(r, n, None).tolist(), dtype=pd.StringDtype("python")),
        "string_pa": lambda r, n: pd.Series(obj(r, n, None).tolist(), dtype=pd.StringDtype("pyarrow")),
        "Int8": lambda r, n: _masked(_ints(r, n, "int8"), h(r, n), "Int8"),
        "Int64": lambda r, n: _masked(_ints(r, n, "int64"), h(r, n), "Int64"),
        "UInt32": lambda r, n: _masked(_ints(r, n, "uint32"), h(r, n), "UInt32"),
        "Float32": lambda r, n: _masked(_floats(r, n).astype("float32"), h(r, n), "Float32"),
        "Float64": lambda r, n: _masked(_floats(r, n), h(r, n), "Float64"),
        "boolean": lambda r, n: _masked(r.random(n) < 0.5, h(r, n), "boolean"),
        "cat_str": lambda r, n: cat(r, n, ["lo", "mid", "hi"]),
        "cat_ord": lambda r, n: cat(r, n, ["lo", "mid", "hi"], ordered=True),
        "cat_int": lambda r, n: cat(r, n, [3, 1, 20]),
        "cat_float": lambda r, n: cat(r, n, [0.5, 1.25, -3.0]),
        "dt_ns": lambda r, n: times(r, n, "ns", None),
        "dt_s": lambda r, n: times(r, n, "s", None),
        "dt_paris": lambda r, n: times(r, n, "ns", "Europe/Paris"),
        "dt_utc_us": lambda r, n: times(r, n, "us", "UTC"),
        "td": deltas,
        "pa_int": lambda r, n: arrow(r, n, _ints(r, n, "int64").tolist(), pa.int64()),
        "pa_float": lambda r, n: arrow(r, n, _floats(r, n).tolist(), pa.float64()),
        "pa_str": lambda r, n: arrow(r, n, _words(r, n), pa.string()),
        "pa_bool": lambda r, n: arrow(r, n, (r.random(n) < 0.5).tolist(), pa.bool_()),
        "pa_ts": lambda r, n: arrow(r, n, list(_times(r, n, "us")), pa.timestamp("us")),
        "pa_tstz": lambda r, n: arrow(r, n, list(_times(r, n, "ns").tz_localize("UTC")), pa.timestamp("ns", "UTC")),
        "pa_list": lambda r, n: arrow(r, n, [[int(i)] * 2 for i in r.integers(0, 9, size=n)], pa.list_(pa.int64())),
        "lists_same": lambda r, n: lists(r, n, 3),
        "lists_ragged": lambda r, n: lists(r, n, None),
        "mixed": mixed,
        7: lambda r, n: r.integers(0, 100, size=n),  # labels that are not strings reach the model as they are
        2.5: lambda r, n: _floats(r, n),
    }


COLUMNS = list(_make(True))


def frame(seed: int, n: int, sample: bool = False) -> pd.DataFrame:
    """One frame of ``COLUMNS``; ``sample`` has a missing value in row 0 of every nullable column."""
    rng = np.random.default_rng(seed)
    makers = _make(sample)
    return pd.DataFrame({label: makers[label](rng, n) for label in COLUMNS}, index=pd.RangeIndex(n))


def canon(value: Any) -> str:
    """A value as the model would tell it apart: which missing marker, or the value's type and repr."""
    if value is None:
        return "None"
    if value is pd.NA:
        return "NA"
    if value is pd.NaT:
        return "NaT"
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return f"nan:{type(value).__name__}"
    return f"{type(value).__name__}:{value!r}"


def report(df: pd.DataFrame) -> dict[str, Any]:
    """What the model received, as JSON-able text."""
    return {
        "columns": [repr(c) for c in df.columns],
        "columns_dtype": str(df.columns.dtype),
        "dtypes": [str(t) for t in df.dtypes],
        "isna": df.isna().to_numpy().tolist(),
        "values": [[canon(v) for v in df.iloc[:, j].tolist()] for j in range(df.shape[1])],
    }


REPORTER = """
import json
from dtype_frames import report

def received(df):
    return [json.dumps(report(df))] + [""] * (len(df) - 1)
"""


def as_text(df: pd.DataFrame) -> str:
    return json.dumps(report(df))
