"""Rows the schema refuses: each kept with its key, the column and value at fault, and the service's own words.

A bad row must not stop a nightly job, nor vanish: it goes to the quarantine (a table or a file beside the
destination) and the summary counts it. The reason is the message the service gives for that row alone, so it reads
the same as a refused ``predict`` call: ``column 'monthly': expected a finite number, got inf``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..runtime.schema import shown

#: The columns of a quarantine, whatever holds it.
COLUMNS = ("column", "value", "reason", "row")
_COLUMN = re.compile(r"column '((?:[^']|'(?!:))*)'")
_FEATURE = re.compile(r"\bfeature (\d+)\b")
_ROW = re.compile(r"\(row (\d+)\)|\bin row (\d+)\b|^row (\d+)\b")


@dataclass(frozen=True)
class BadRow:
    """One quarantined row: its key, the column at fault (None if the message names none), the offending value
    as shown, the reason, and the whole row as JSON (to fix and score again)."""

    key: Any
    column: str | None
    value: str | None
    reason: str
    row: str

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.key, self.column, self.value, self.reason, self.row)


def row_of(message: str) -> int | None:
    """The row a refusal names (``… (row 12)``, ``missing value in row 12``), within the frame that was sent."""
    found = _ROW.search(message)
    return None if found is None else int(next(g for g in found.groups() if g is not None))


def reason_of(message: str) -> str:
    """The message for one row, without its row number (it counted rows of a request, not of the source)."""
    return _ROW.sub("", message).replace("  ", " ").replace(" :", ":").strip()


def _python(value: Any) -> Any:
    """A plain Python value; None for every missing marker."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _json_value(value: Any) -> Any:
    value = _python(value)
    if isinstance(value, float) and math.isinf(value):
        return str(value)  # JSON has no infinity
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def bad_row(key: Any, row: pd.Series, message: str, features: list[str]) -> BadRow:
    """A BadRow from the source row and the refusal; the column comes from the message (by name or position)."""
    column: str | None = None
    if (named := _COLUMN.search(message)) is not None:
        column = named.group(1)
    elif (position := _FEATURE.search(message)) is not None and int(position.group(1)) < len(features):
        column = features[int(position.group(1))]
    value = None  # the value at fault as the message shows it (None: missing, or no column named)
    if column is not None and column in row.index and (python := _python(row[column])) is not None:
        value = shown(python)
    text = json.dumps({str(k): _json_value(v) for k, v in row.items()}, default=str, allow_nan=False)
    return BadRow(key, column, value, reason_of(message), text)


def frame(rows: list[BadRow], key: str) -> pd.DataFrame:
    """Quarantined rows as a DataFrame: the key column, then column, value, reason, row."""
    return pd.DataFrame([r.as_tuple() for r in rows], columns=[key, *COLUMNS])
