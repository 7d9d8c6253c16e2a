"""Data drift of live inputs (and predictions) against the reference sample captured at deploy.

The choice of test follows common practice (Evidently's defaults): with a small reference a
statistical test (Kolmogorov-Smirnov for numbers, chi-square for categories) at p < 0.05; with a
large one, where every test becomes significant, a distance (Wasserstein normalised by the
reference's standard deviation, Jensen-Shannon) above 0.1. PSI is shown beside for numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr


@dataclass(frozen=True)
class DriftThresholds:
    """Defaults documented in docs; pass your own to ``dep.drift(thresholds=...)``."""

    p_value: float = 0.05  # KS / chi-square: drifted when p < this
    wasserstein: float = 0.1  # normalised Wasserstein distance: drifted when above
    jensen_shannon: float = 0.1  # Jensen-Shannon distance (base 2): drifted when above
    large_reference: int = 1000  # references with more rows use distances instead of tests
    min_current: int = 30  # fewer live rows than this: not judged yet


COLUMNS = ["kind", "test", "statistic", "p_value", "threshold", "drifted", "psi", "n_reference", "n_current"]


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    eps = 1e-6
    ref = np.histogram(reference, edges)[0] / len(reference) + eps
    cur = np.histogram(current, edges)[0] / len(current) + eps
    return float(np.sum(rel_entr(cur, ref) + rel_entr(ref, cur)))


def _numeric(ref: np.ndarray, cur: np.ndarray, t: DriftThresholds) -> dict[str, Any]:
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    row: dict[str, Any] = {"kind": "numeric", "psi": psi(ref, cur) if len(ref) and len(cur) else np.nan}
    if len(ref) <= t.large_reference:
        res = stats.ks_2samp(ref, cur)
        row.update(test="ks", statistic=float(res.statistic), p_value=float(res.pvalue), threshold=t.p_value)
        row["drifted"] = bool(res.pvalue < t.p_value)
    else:
        scale = float(np.std(ref)) or 1.0
        dist = float(stats.wasserstein_distance(ref, cur)) / scale
        row.update(test="wasserstein", statistic=dist, p_value=np.nan, threshold=t.wasserstein)
        row["drifted"] = bool(dist > t.wasserstein)
    return row


def _categorical(ref: pd.Series, cur: pd.Series, t: DriftThresholds) -> dict[str, Any]:
    cats = sorted(set(ref.dropna().astype(str)) | set(cur.dropna().astype(str)))
    ref_counts = ref.dropna().astype(str).value_counts().reindex(cats, fill_value=0).to_numpy(float)
    cur_counts = cur.dropna().astype(str).value_counts().reindex(cats, fill_value=0).to_numpy(float)
    row: dict[str, Any] = {"kind": "categorical", "psi": np.nan}
    if len(cats) < 2:
        row.update(test="chi2", statistic=0.0, p_value=1.0, threshold=t.p_value, drifted=False)
    elif len(ref) <= t.large_reference:
        table = np.vstack([ref_counts, cur_counts])
        table = table[:, table.sum(axis=0) > 0]
        res = stats.chi2_contingency(table)
        row.update(test="chi2", statistic=float(res.statistic), p_value=float(res.pvalue), threshold=t.p_value)
        row["drifted"] = bool(res.pvalue < t.p_value)
    else:
        dist = float(jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), base=2))
        row.update(test="jensen_shannon", statistic=dist, p_value=np.nan, threshold=t.jensen_shannon)
        row["drifted"] = bool(dist > t.jensen_shannon)
    return row


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _judge(name: str, ref: pd.Series, cur: pd.Series, t: DriftThresholds, categorical: bool) -> dict[str, Any]:
    n_ref, n_cur = int(ref.notna().sum()), int(cur.notna().sum())
    if n_cur < t.min_current or n_ref == 0:
        kind = "categorical" if categorical or not _is_numeric(ref) else "numeric"
        blank = dict.fromkeys(("statistic", "p_value", "threshold", "psi"), np.nan)
        return {"feature": name, "kind": kind, "test": "too few rows", **blank, "drifted": False,
                "n_reference": n_ref, "n_current": n_cur}  # fmt: skip
    if categorical or not _is_numeric(ref):
        row = _categorical(ref, cur, t)
    else:
        row = _numeric(ref.to_numpy(float), pd.to_numeric(cur, errors="coerce").to_numpy(float), t)
    row.update(n_reference=n_ref, n_current=n_cur)
    return {"feature": name, **row}


def compute(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    reference_predictions: Any = None,
    current_predictions: Any = None,
    thresholds: DriftThresholds | None = None,
) -> pd.DataFrame:
    """One row per feature (and ``prediction``): the test, its statistic or distance, and ``drifted``."""
    t = thresholds or DriftThresholds()
    rows = [
        _judge(str(c), reference[c], current[c] if c in current else pd.Series(dtype=float), t, False)
        for c in reference.columns
    ]
    if reference_predictions is not None and current_predictions is not None:
        ref_p, cur_p = pd.Series(np.asarray(reference_predictions)), pd.Series(np.asarray(current_predictions))
        labels = not _is_numeric(ref_p) or (pd.api.types.is_integer_dtype(ref_p) and ref_p.nunique() <= 20)
        rows.append(_judge("prediction", ref_p, cur_p, t, labels))
    frame = pd.DataFrame(rows).set_index("feature")
    return frame[COLUMNS]
