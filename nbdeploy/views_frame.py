"""The list views' rows as pandas: ``nbdeploy.deployments()`` and what ``%deployments`` shows.

Apart from ``nbdeploy.views`` because pandas is imported here: the ``nbdeploy`` command uses the views without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from .views import COLUMNS, Row, html_table, list_text


def to_frame(table: Sequence[Row], frame_class: type[pd.DataFrame] = pd.DataFrame) -> pd.DataFrame:
    """One row per version, indexed by name; the ``name`` column stays (filters, ``itertuples``, ``set_index``).

    The index is left unnamed: a level and a column both called ``name`` would make ``sort_values("name")`` and
    ``groupby("name")`` ambiguous.
    """
    frame = pd.DataFrame([r.as_dict() for r in table], columns=COLUMNS)
    frame = frame.astype({"version": "int64", "checked": "bool", "requests": "Int64", "errors": "Int64"})
    frame["error_rate"] = frame["error_rate"].astype("float64")
    frame.index = pd.Index([r.name for r in table], dtype=object)
    return frame if frame_class is pd.DataFrame else frame_class(frame)


class DeploymentsFrame(pd.DataFrame):
    """What ``%deployments`` returns: a DataFrame for code, shown as the compact table (HTML in a notebook, text in
    a terminal). Frames derived from it (filters, selections) are plain DataFrames again."""

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    def _rows(self) -> list[Row]:
        if not {"name", "version", "target", "status", "created_at"} <= set(self.columns):
            return []
        return [Row.from_mapping(values) for values in self.to_dict(orient="records")]

    def _repr_html_(self) -> str:  # type: ignore[override]
        return html_table(self._rows())

    def __repr__(self) -> str:
        return list_text(self._rows())


def deployments_frame(table: Sequence[Row]) -> Any:
    """The frame ``%deployments`` returns."""
    return to_frame(table, DeploymentsFrame)
