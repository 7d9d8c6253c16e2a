"""Which rows of a chunk the service would refuse, and why: with the service's own schema code, not a copy of it.

Two steps. ``conform`` types what a file or a database hands over as text or decimals (a CSV column of numbers
with one ``"ten"`` in it arrives as strings: without this, one bad value would refuse every row of its chunk).
``find_bad`` then isolates refused rows: it asks a check (the runtime's ``arrays_to_model_input`` on the frame as
the service decodes it, or the service itself), takes the row the refusal names when it names one, and splits the
rest in halves, so a few bad rows in a chunk cost a few validations of it, not one per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..runtime import frames
from ..runtime.schema import InputError, arrays_to_model_input, shown
from .quarantine import row_of

_NUMBER_KINDS = ("integer", "float")
_TEXT_KINDS = ("string", "category")


@dataclass(frozen=True)
class Refusal:
    """Why a frame was refused, and the row the message names (within that frame), if it names one."""

    message: str
    row: int | None


#: A check of a frame: None if the service would take it, else the refusal.
Check = Callable[[pd.DataFrame], Refusal | None]


def feature_kinds(schema: dict[str, Any]) -> dict[str, str]:
    """Column name -> kind, for the columns the model takes (an unnamed array's features are all numbers)."""
    if schema.get("kind") == "ndarray":
        return dict.fromkeys(schema.get("feature_names") or [], "float")
    return {str(c["name"]): str(c["kind"]) for c in schema.get("columns", [])}


def text_columns(schema: dict[str, Any]) -> list[str]:
    """Columns to read as text from a CSV, so digits in a string column stay a string."""
    return [name for name, kind in feature_kinds(schema).items() if kind in _TEXT_KINDS]


def conform(chunk: pd.DataFrame, kinds: dict[str, str]) -> tuple[pd.DataFrame, dict[int, str]]:
    """The chunk with number columns as numbers; rows whose value is no number, with the reason (by position)."""
    bad: dict[int, str] = {}
    out = chunk
    for name, kind in kinds.items():
        if name not in chunk.columns:
            continue
        col = chunk[name]
        if kind in _NUMBER_KINDS and not pd.api.types.is_numeric_dtype(col.dtype):  # text, decimals, objects
            numbers = pd.to_numeric(col, errors="coerce")
            wrong = numbers.isna().to_numpy() & col.notna().to_numpy()
            for pos in np.flatnonzero(wrong).tolist():
                bad.setdefault(pos, f"column '{name}': expected a number, got {shown(col.iat[pos])}")
            out = out if out is not chunk else chunk.copy()
            out[name] = numbers
        elif kind in _TEXT_KINDS and col.dtype.kind == "f" and col.isna().all():
            out = out if out is not chunk else chunk.copy()  # a chunk where the column is all missing
            out[name] = pd.Series([None] * len(col), dtype=object, index=col.index)
    return out, bad


def local_check(schema: dict[str, Any]) -> Check:
    """The service's validation run here, on the frame as the service would decode it."""
    limits = frames.Limits(max_rows=10**9, max_columns=10**6, max_bytes=1 << 62)

    def check(frame: pd.DataFrame) -> Refusal | None:
        body = frames.encode(frame)
        if body is None:
            return Refusal("a value cannot travel in a frame (numpy.savez without pickle)", None)
        try:
            names, arrays = frames.decode(body, limits)
            arrays_to_model_input(names, arrays, schema)
        except (InputError, frames.FrameError) as exc:
            return Refusal(str(exc), row_of(str(exc)))
        return None

    return check


def find_bad(frame: pd.DataFrame, check: Check, first: Refusal | None = None) -> list[tuple[int, str]]:
    """Positions (in ``frame``) of the rows ``check`` refuses, each with the message for that row alone.
    ``first``: the refusal of the whole frame, if it is known already."""
    found: list[tuple[int, str]] = []
    _search(frame, np.arange(len(frame)), check, first, found)
    return sorted(found)


def _search(
    frame: pd.DataFrame, rows: np.ndarray, check: Check, known: Refusal | None, found: list[tuple[int, str]]
) -> None:
    refusal = known if known is not None else check(frame.iloc[rows])
    if refusal is None:
        return
    if len(rows) == 1:
        found.append((int(rows[0]), refusal.message))
        return
    if refusal.row is not None and 0 <= refusal.row < len(rows):
        # the named row, alone: refused in its own words, or fine (the message counted something else)
        alone = check(frame.iloc[rows[refusal.row : refusal.row + 1]])
        if alone is not None:
            found.append((int(rows[refusal.row]), alone.message))
            rows = np.delete(rows, refusal.row)
            if len(rows) == 0:
                return
    half = len(rows) // 2
    if half == 0:
        _search(frame, rows, check, None, found)
        return
    _search(frame, rows[:half], check, None, found)
    _search(frame, rows[half:], check, None, found)
