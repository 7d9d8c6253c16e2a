"""Large frames as NumPy ``.npz`` bodies: columns travel as arrays, with no JSON text to write or parse.

A 100k-row frame of 8 floats is 16 MB of JSON whose encoding and parsing cost more than the model; as an
uncompressed ``.npz`` it is 6.4 MB that ``np.load`` maps back into arrays in milliseconds. The format is NumPy's
own (``np.savez``): one array per column (``c0``, ``c1``, ...) plus ``__columns__``, the names. The service loads
it with ``allow_pickle=False``, so object arrays (and with them arbitrary pickles) are refused.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MEDIA_TYPE = "application/x-npz"
MOUNT = "/frame"  # a Starlette app mounted on the BentoML service
ROUTE = f"{MOUNT}/predict"
COLUMNS = "__columns__"
_KINDS = "biufUM"  # bool, int, uint, float, unicode, datetime64: what needs no pickle


class FrameError(ValueError):
    """A body that is not a frame this module wrote."""

    status = 400


class FrameTooLarge(FrameError):
    """A frame over the row or size limit (HTTP 413, as for JSON)."""

    status = 413


def _array(col: Any) -> np.ndarray | None:
    """The column as a pickle-free array, or None when only JSON can carry it (missing strings, objects)."""
    if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        values = col.astype(object) if isinstance(col.dtype, pd.CategoricalDtype) else col
        if col.isna().any() or pd.api.types.infer_dtype(values, skipna=False) != "string":  # missing, objects
            return None
        return np.asarray(values.to_numpy(dtype=str))
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        if getattr(col.dtype, "tz", None) is not None:
            return None  # keep the zone: JSON's ISO strings carry it
        return col.to_numpy(dtype="datetime64[ns]")
    arr = col.to_numpy()
    return arr if arr.dtype.kind in _KINDS else None


def encode(frame: Any) -> bytes | None:
    """``frame`` (a DataFrame) as an ``.npz`` body, or None if a column needs JSON."""
    arrays: dict[str, np.ndarray] = {COLUMNS: np.asarray([str(c) for c in frame.columns], dtype=str)}
    for i in range(frame.shape[1]):
        arr = _array(frame.iloc[:, i])
        if arr is None:
            return None
        arrays[f"c{i}"] = arr
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
    if len(infos) > limits.max_columns + 1:
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
            arrays = [_read(npz, infos[f"c{i}"]) for i in range(len(names))]
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
