"""Which features' shifts moved the predictions: a cheap, univariate attribution of the prediction's change.

For each feature the reference sample is binned (quantile bins for numbers, each value its own bin when there are
few, categories as they are, missing values in a bin of their own) and the mean of the session's predictions on it
is taken per bin: for class labels the share of predictions = a class, for numbers the mean. Under the live
window's distribution of that feature alone the predictions would then average Σ live share of bin × reference
mean in bin; minus the reference's overall mean, that is how much the feature's shift alone moves the prediction.
The observed total is the live mean minus the reference mean.

What it is not: a model explanation or a causal attribution. It takes one feature at a time, so it ignores
interactions, and correlated features that shift together each get the whole of their common effect; the
figures need not add up to the observed total. A bin holds the other features at their reference mix, a live value
beyond the reference's range counts in the end bin, and a category the reference saw fewer than ``MIN_ROWS``
times (or never) moves nothing. It never calls the model.

Cheap: the bins and the mean per bin are computed once per version (``ReferenceAttribution.build``, kept by the
panel's ``LogCache``); a refresh bins the live window in one pass (every number feature at once; a count per
category) and weighs the cached means by the live shares: about 2 ms for 100 features and 1,000 live rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .drift import category_counts

__all__ = ["Attribution", "ReferenceAttribution"]

BINS = 10  # quantile bins of a number (fewer distinct values: one bin each)
MIN_ROWS = 5  # a bin with fewer reference rows moves nothing (its mean would be noise)
MAX_CLASSES = 20  # class labels: the most common this many are targets


@dataclass
class Attribution:
    """How much each feature's shift alone moves ``target``, and how much it moved in all (``observed``)."""

    target: str  # in words: "share of predictions = 1", "mean prediction"
    reference: float  # the target over the reference sample
    live: float  # ... and over the live window
    moves: dict[str, float] = field(default_factory=dict)  # per feature

    @property
    def observed(self) -> float:
        return self.live - self.reference


@dataclass
class _Categories:
    column: Any  # the column's label in the frames (the feature's name is its text)
    index: dict[str, int]  # the bin of each category seen MIN_ROWS times; then "unseen", then "missing"
    delta: np.ndarray  # per bin x target: the reference's mean in the bin minus its overall mean


def _numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


@dataclass
class ReferenceAttribution:
    """The reference side: per feature its bins and the reference's mean prediction in each, once per version."""

    labels: bool  # predictions are class labels: one target per class (its share), else one (the mean)
    classes: list[Any]
    overall: np.ndarray  # per target: the reference's mean
    # numbers, a row each: the inner bin edges (a value's bin: how many are <= it), NaN-padded, and per bin (the
    # last: missing values) and target the reference's mean in the bin minus its overall mean
    numbers: dict[str, Any] = field(default_factory=dict)  # feature -> its column's label
    edges: np.ndarray = field(default_factory=lambda: np.empty((0, BINS - 1)))
    delta: np.ndarray = field(default_factory=lambda: np.empty((0, BINS + 1, 1)))
    categories: dict[str, _Categories] = field(default_factory=dict)

    @classmethod
    def build(cls, inputs: pd.DataFrame, predictions: Any, labels: bool) -> ReferenceAttribution:
        """From the reference sample and the session's predictions on it (one per row)."""
        preds = np.asarray(predictions)
        if labels:
            names, counts = np.unique(preds.astype(str), return_counts=True)
            classes: list[Any] = sorted(names[np.argsort(-counts, kind="stable")[:MAX_CLASSES]].tolist(), key=_natural)
            y = (preds.astype(str)[:, None] == np.asarray(classes)[None, :]).astype(float)
            keep = np.ones(len(preds), dtype=bool)
        else:
            classes = []
            y = pd.to_numeric(pd.Series(preds), errors="coerce").to_numpy(float)[:, None]
            keep = np.isfinite(y[:, 0])
        y = y[keep]
        out = cls(labels, classes, y.mean(axis=0) if len(y) else np.zeros(y.shape[1]))
        if not len(y):
            return out
        edges, deltas = [], []
        for col in inputs.columns:
            column = inputs[col][keep]
            if _numeric(column):
                out.numbers[str(col)] = col
                e, d = _numeric_bins(column.to_numpy(float), y, out.overall)
                edges.append(e)
                deltas.append(d)
            else:
                out.categories[str(col)] = _category_bins(col, column, y, out.overall)
        if edges:
            out.edges, out.delta = np.vstack(edges), np.stack(deltas)
        return out

    def attribute(
        self, live: pd.DataFrame, predictions: Any, features: Iterable[str] | None = None
    ) -> Attribution | None:
        """Each of ``features`` (default: all) that ``live`` has: how much its live distribution alone moves the
        target; class labels: the positive class of two (the latter sorted), of more the one whose share moved most.
        None when the reference has no usable prediction."""
        if not len(self.overall):
            return None
        wanted = set(self.numbers) | set(self.categories) if features is None else set(features)
        rows = [i for i, (f, col) in enumerate(self.numbers.items()) if f in wanted and col in live]
        cats = [f for f, c in self.categories.items() if f in wanted and c.column in live]
        numbers = list(self.numbers)
        moves: dict[str, np.ndarray] = {}
        n = len(live)
        if n and rows:
            values = _matrix(live, [self.numbers[numbers[i]] for i in rows])  # a row per feature
            edges = self.edges[rows]
            ids = np.zeros(values.shape, dtype=np.intp)
            for b in range(edges.shape[1]):  # one comparison per edge for every feature at once
                ids += values >= edges[:, b : b + 1]
            ids[np.isnan(values)] = BINS
            ids += (np.arange(len(rows)) * (BINS + 1))[:, None]
            counts = np.bincount(ids.ravel(), minlength=len(rows) * (BINS + 1)).reshape(len(rows), BINS + 1)
            moved = np.einsum("fb,fbk->fk", counts, self.delta[rows]) / n
            moves.update((numbers[i], moved[j]) for j, i in enumerate(rows))
        for name in cats if n else []:
            c = self.categories[name]
            tally = np.zeros(len(c.delta))
            for cat, k in category_counts(live[c.column]).items():
                tally[c.index.get(cat, len(c.index))] += k
            tally[-1] = n - tally[:-1].sum()
            moves[name] = tally @ c.delta / n
        now = self._live_means(predictions)
        k = self._target(now)
        return Attribution(
            target=f"share of predictions = {self.classes[k]}" if self.labels else "mean prediction",
            reference=float(self.overall[k]),
            live=float(now[k]),
            moves={name: float(v[k]) for name, v in moves.items()},
        )

    def _live_means(self, predictions: Any) -> np.ndarray:
        preds = np.asarray(predictions)
        if not len(preds):
            return self.overall.copy()
        if self.labels:
            text = preds.astype(str)
            return np.asarray([float(np.mean(text == c)) for c in self.classes])
        y = pd.to_numeric(pd.Series(preds), errors="coerce").to_numpy(float)
        y = y[np.isfinite(y)]
        return np.asarray([float(y.mean())]) if len(y) else self.overall.copy()

    def _target(self, live: np.ndarray) -> int:
        if not self.labels or len(self.classes) == 1:
            return 0
        if len(self.classes) == 2:
            return 1
        return int(np.argmax(np.abs(live - self.overall)))


def _natural(label: str) -> tuple[int, float, str]:
    """Class labels in their natural order: numbers by value ("2" before "10"), then text."""
    try:
        return 0, float(label), label
    except ValueError:
        return 1, 0.0, label


def _numeric_bins(v: np.ndarray, y: np.ndarray, overall: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inner edges (NaN-padded to BINS - 1) and per bin the mean minus overall: quantile bins, or a bin per value
    when there are at most BINS."""
    known = v[~np.isnan(v)]
    distinct = np.unique(known)
    few = len(distinct) <= BINS
    inner = distinct[1:] if few else np.unique(np.quantile(known, np.linspace(0, 1, BINS + 1))[1:-1])
    ids = np.searchsorted(inner, v, "right")
    ids[np.isnan(v)] = BINS
    padded = np.full(BINS - 1, np.nan)
    padded[: len(inner)] = inner
    return padded, _deltas(ids, BINS + 1, y, overall)


def _category_bins(label: Any, column: pd.Series, y: np.ndarray, overall: np.ndarray) -> _Categories:
    text = column.astype(str).to_numpy()
    missing = column.isna().to_numpy()
    names, first, counts = np.unique(text[~missing], return_inverse=True, return_counts=True)
    seen = counts >= MIN_ROWS
    index = {str(c): i for i, c in enumerate(names[seen])}
    slot = np.where(seen, np.cumsum(seen) - 1, len(index))  # the rare ones go to "unseen"
    ids = np.full(len(text), len(index) + 1)
    ids[~missing] = slot[first]
    delta = _deltas(ids, len(index) + 2, y, overall)
    delta[len(index)] = 0.0  # unseen: moves nothing
    return _Categories(label, index, delta)


def _deltas(ids: np.ndarray, bins: int, y: np.ndarray, overall: np.ndarray) -> np.ndarray:
    """Per bin and target: the mean of ``y`` in the bin minus ``overall`` (0 where the bin has too few rows)."""
    count = np.bincount(ids, minlength=bins).astype(float)
    sums = np.stack([np.bincount(ids, weights=y[:, k], minlength=bins) for k in range(y.shape[1])], axis=1)
    means = np.divide(sums, count[:, None], out=np.tile(overall, (bins, 1)), where=count[:, None] >= MIN_ROWS)
    return means - overall


def _matrix(live: pd.DataFrame, columns: list[Any]) -> np.ndarray:
    """The numeric columns as one float matrix, a row per column (one conversion, not one per column); unreadable
    values NaN."""
    try:
        return live[columns].to_numpy(dtype=float).T
    except (TypeError, ValueError):
        return np.vstack([pd.to_numeric(live[c], errors="coerce").to_numpy(float) for c in columns])
