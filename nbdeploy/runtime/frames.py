"""Large frames as NumPy ``.npz`` bodies: columns travel as arrays, with no JSON text to write or parse.

A 100k-row frame of 8 floats is 16 MB of JSON whose encoding and parsing cost more than the model; as an
uncompressed ``.npz`` it is 6.4 MB that ``np.load`` maps back into arrays in milliseconds. The format is NumPy's
own (``np.savez``): one array per column (``c0``, ``c1``, ...) plus ``__columns__``, the names, and for a column
whose dtype has no NaN of its own (nullable ``Int64``/``boolean``, strings, pyarrow-backed) a boolean ``m<i>``
marking its missing values; ``decode`` hands such a column back as a masked array. Zoned times travel as UTC (the
schema has the zone), durations as timedelta64, categories as their values. The service loads it with
``allow_pickle=False``, so object arrays (and with them arbitrary pickles) are refused: object columns go as JSON.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .schema import from_polars, is_polars

MEDIA_TYPE = "application/x-npz"
MOUNT = "/frame"  # a Starlette app mounted on the BentoML service
ROUTE = f"{MOUNT}/predict"
COLUMNS = "__columns__"
TEXTS = "__json__"  # which columns hold JSON texts (object columns), by index
_KINDS = "biufUMm"  # bool, int, uint, float, unicode, datetime64, timedelta64: what needs no pickle


class FrameError(ValueError):
    """A body that is not a frame this module wrote."""

    status = 400


class FrameTooLarge(FrameError):
    """A frame over the row or size limit (HTTP 413, as for JSON)."""

    status = 413


def _array(col: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The column as a pickle-free array and the mask of its missing values (when the array cannot mark them
    itself), or None when only JSON can carry it (object columns, values JSON carries better)."""
    dtype = col.dtype
    missing = col.isna().to_numpy(dtype=bool)
    mask = missing if missing.any() else None
    try:
        if isinstance(dtype, pd.CategoricalDtype):
            values, codes = dtype.categories.to_numpy(), col.cat.codes.to_numpy()
            if len(values) == 0:
                return None
            arr = values[np.maximum(codes, 0)]  # a missing value takes the first category, under the mask
            if arr.dtype == object and pd.api.types.infer_dtype(arr, skipna=False) == "string":
                arr = arr.astype(str)
            return (arr, mask) if arr.dtype.kind in "biufU" else None
        if isinstance(dtype, np.dtype) and dtype.kind == "O":
            if mask is not None or pd.api.types.infer_dtype(col, skipna=False) != "string":
                return None  # missing markers (None/NaN) and objects: as JSON texts
            return np.asarray(col.to_numpy(dtype=str)), None
        if pd.api.types.is_string_dtype(dtype):
            return np.asarray(col.to_numpy(dtype=str, na_value="")), mask
        if pd.api.types.is_datetime64_any_dtype(dtype):
            utc = col.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(col.dt, "tz", None) is not None else col
            return np.asarray(utc.to_numpy(dtype="datetime64[ns]", na_value=np.datetime64("NaT"))), None
        if getattr(dtype, "kind", "") == "m":
            return np.asarray(col.to_numpy(dtype="timedelta64[ns]", na_value=np.timedelta64("NaT"))), None
        numpy_dtype = getattr(dtype, "numpy_dtype", dtype)
        if not isinstance(numpy_dtype, np.dtype) or numpy_dtype.kind not in "biuf":
            return None
        if isinstance(dtype, np.dtype):
            return col.to_numpy(), None
        fill = {"f": np.nan, "b": False}.get(numpy_dtype.kind, 0)
        return np.asarray(col.to_numpy(dtype=numpy_dtype, na_value=fill), dtype=numpy_dtype), mask
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None  # a value this route cannot carry exactly: JSON will (or will say why not)


#: Missing markers of an object column, written as bare tokens (never valid JSON texts of a value but NaN's).
_MARKS: dict[str, Any] = {"NA": pd.NA, "NaT": pd.NaT}


def _text(value: Any) -> str:
    """One value of an object column as JSON text; NaN, ``pd.NA`` and ``NaT`` keep their own tokens."""
    if value is pd.NA:
        return "NA"
    if value is pd.NaT:
        return "NaT"
    return json.dumps(value, allow_nan=True, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _texts(col: Any) -> np.ndarray | None:
    """An object column (lists, dicts, mixed values and missing markers) as a unicode array of JSON texts."""
    try:
        return np.asarray([_text(v) for v in col.tolist()], dtype=str)
    except (TypeError, ValueError):
        return None


def encode(frame: Any) -> bytes | None:
    """``frame`` (a pandas or polars DataFrame) as an ``.npz`` body, or None if a value cannot travel at all."""
    if is_polars(frame):
        frame = from_polars(frame)
    arrays: dict[str, np.ndarray] = {COLUMNS: np.asarray([str(c) for c in frame.columns], dtype=str)}
    texts: list[int] = []
    for i in range(frame.shape[1]):
        got = _array(frame.iloc[:, i])
        if got is None:
            text = _texts(frame.iloc[:, i])
            if text is None:
                return None
            arrays[f"c{i}"], mask = text, None
            texts.append(i)
        else:
            arrays[f"c{i}"], mask = got
        if mask is not None:
            arrays[f"m{i}"] = mask
    if texts:
        arrays[TEXTS] = np.asarray(texts, dtype="int64")
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


@dataclass(frozen=True)
class Limits:
    """What one frame may expand to; checked against the zip and .npy headers before anything is inflated."""

    max_rows: int = 200_000
    max_columns: int = 10_000
    max_bytes: int = 128 * 1024 * 1024  # the arrays' total size once read, whatever the compression


def _header(npz: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype an array declares, read from its .npy header alone."""
    with npz.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise FrameError(f"array '{info.filename}' has an unknown .npy version {version}")
    return shape, dtype


def _check_headers(npz: zipfile.ZipFile, limits: Limits) -> dict[str, zipfile.ZipInfo]:
    """Refuse a frame whose headers promise more than the limits, before any array is decompressed."""
    infos = {i.filename.removesuffix(".npy"): i for i in npz.infolist()}
    if len(infos) > 2 * limits.max_columns + 2:  # a column and its mask at most, the names, the list of texts
        raise FrameError(f"the .npz body holds {len(infos) - 1} arrays; the model takes {limits.max_columns} columns")
    total = 0
    for name, info in infos.items():
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FrameError(f"array '{_short(name)}' is compressed with method {info.compress_type}: use numpy.savez")
        shape, dtype = _header(npz, info)
        if dtype.hasobject or dtype.kind not in _KINDS:
            raise FrameError(f"array '{_short(name)}' has dtype {dtype}: not a column type that reads without pickle")
        if len(shape) != 1:
            raise FrameError("every column of an .npz body must be a 1-D array of the same length")
        cap = limits.max_columns if name == COLUMNS else limits.max_rows
        if shape[0] > cap:
            what = "column names" if name == COLUMNS else "rows"
            raise (FrameError if name == COLUMNS else FrameTooLarge)(
                f"array '{_short(name)}' declares {shape[0]} {what}; the limit is {cap}"
            )
        total += shape[0] * dtype.itemsize
        if total > limits.max_bytes:
            raise FrameTooLarge(f"the frame expands to over {limits.max_bytes} bytes; send fewer rows per request")
    return infos


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else f"{name[:limit]}… ({len(name)} characters)"


def decode(body: bytes, limits: Limits | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Column names and arrays from an ``.npz`` body; FrameError says what is wrong with it.

    Every array's declared shape and dtype is checked against ``limits`` first, so a small compressed body
    cannot expand into gigabytes (a zip bomb) and a list of a million names is refused unread.
    """
    limits = limits or Limits()
    if not body.startswith(b"PK\x03\x04"):  # np.load would take anything else for a .npy or a pickle
        raise FrameError("the body is not an .npz file (numpy.savez)")
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as npz:
            infos = _check_headers(npz, limits)
            if COLUMNS not in infos:
                raise FrameError(f"the .npz body has no '{COLUMNS}' array naming the columns")
            names = [str(n) for n in _read(npz, infos[COLUMNS]).tolist()]
            missing = [f"c{i}" for i in range(len(names)) if f"c{i}" not in infos]
            if missing:
                raise FrameError(f"the .npz body names {len(names)} columns but has no array '{missing[0]}'")
            texts = set(_read(npz, infos[TEXTS]).tolist()) if TEXTS in infos else set()
            arrays = [_column(npz, infos, i, i in texts) for i in range(len(names))]
    except FrameError:
        raise
    except ValueError as exc:  # object arrays need pickle, which is refused; malformed headers
        raise FrameError(f"the .npz body cannot be read without pickle: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise FrameError(f"the body is not an .npz file: {exc}") from None
    if len({a.shape[0] for a in arrays}) > 1:
        raise FrameError("every column of an .npz body must be a 1-D array of the same length")
    return names, arrays


def _read(npz: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with npz.open(info) as fp:
        return np.lib.format.read_array(fp, allow_pickle=False)


def _column(npz: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], i: int, text: bool) -> np.ndarray:
    """Column ``i``: masked where ``m<i>`` marks a missing value; an object array if it travelled as JSON texts."""
    arr = _read(npz, infos[f"c{i}"])
    if text:
        if arr.dtype.kind != "U":
            raise FrameError(f"array 'c{i}' is listed in '{TEXTS}' but holds {arr.dtype}, not JSON texts")
        out = np.empty(len(arr), dtype=object)
        for row, t in enumerate(arr.tolist()):
            try:
                out[row] = _MARKS[t] if t in _MARKS else json.loads(t)
            except ValueError:
                raise FrameError(f"column {i}, row {row}: {t[:40]!r} is not JSON") from None
        return out
    if f"m{i}" not in infos:
        return arr
    mask = _read(npz, infos[f"m{i}"])
    if mask.dtype != bool or mask.shape != arr.shape:
        raise FrameError(f"array 'm{i}' must be a boolean mask as long as column 'c{i}'")
    return np.ma.MaskedArray(arr, mask=mask)
