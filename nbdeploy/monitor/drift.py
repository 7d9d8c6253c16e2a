"""Data drift of live inputs (and predictions) against the reference sample captured at deploy.

A feature is flagged only when its shift is both *significant* and *large enough to matter*:

- significant: the per-feature test (Kolmogorov-Smirnov for numbers, chi-square for categories) stays below the
  false discovery rate after Benjamini-Hochberg across all features and the prediction, so testing a hundred
  features does not raise a handful of false flags on every refresh;
- large: an effect size at or above its threshold, Wasserstein distance divided by the reference's standard
  deviation for numbers, Jensen-Shannon distance (base 2) for categories. With big windows every test is
  significant; the effect size keeps trivial shifts quiet.

Windows smaller than ``min_current`` rows are not judged. Flags have hysteresis: a feature flagged before stays
flagged while its effect is at least ``release`` times the threshold and its q-value below twice the rate, so a
flag does not flicker between refreshes. The dataset is drifted when ``dataset_share`` of the features are.

The reference's sorted values, spread and bins are computed once per version (``ReferenceStats``), so a refresh
only sorts the live window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special
from scipy.spatial.distance import jensenshannon

__all__ = ["COLUMNS", "DriftThresholds", "ReferenceStats", "benjamini_hochberg", "compute", "dataset_drifted", "psi"]


@dataclass(frozen=True)
class DriftThresholds:
    """The drift rule's cut-offs, printed in the panel; pass your own to ``dep.drift(thresholds=...)``."""

    fdr: float = 0.05  # Benjamini-Hochberg false discovery rate across features and the prediction
    wasserstein: float = 0.1  # numbers: Wasserstein distance / reference standard deviation at least this
    jensen_shannon: float = 0.1  # categories: Jensen-Shannon distance (base 2) at least this
    min_current: int = 100  # fewer live rows than this: not judged yet
    window: int = 1000  # the latest this many live rows form the window judged
    release: float = 0.75  # hysteresis: a flag stays while effect >= release x threshold (and q < 2 x fdr)
    dataset_share: float = 0.3  # the dataset is drifted when at least this share of features are flagged

    def describe(self) -> str:
        """The rule in one line, for the panel and the report."""
        return (
            f"flagged when BH q < {self.fdr:g} across features and effect ≥ threshold "
            f"(Wasserstein/σ ≥ {self.wasserstein:g} for numbers, Jensen-Shannon ≥ {self.jensen_shannon:g} for "
            f"categories); judged on the latest {self.window:,} rows, at least {self.min_current:,}; a flag stays "
            f"while effect ≥ {self.release:g}× threshold; dataset drifted at ≥ {self.dataset_share:.0%} of features"
        )


COLUMNS = [
    "kind", "test", "statistic", "p_value", "q_value", "effect", "threshold", "drifted", "psi", "n_reference",
    "n_current",
]  # fmt: skip

HIST_BINS = 24


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    return _psi(np.sort(reference), edges, np.sort(current))


def _psi(ref_sorted: np.ndarray, edges: np.ndarray, current: np.ndarray, ref_shares: np.ndarray | None = None) -> float:
    """PSI of ``current`` (sorted) against the reference's quantile bins; ``ref_shares``: the reference's shares in
    them, when already known."""
    if len(edges) < 2 or not len(ref_sorted) or not len(current):
        return 0.0
    inner = edges[1:-1]
    ref = _shares(ref_sorted, inner) if ref_shares is None else ref_shares
    cur = _shares(current, inner)
    ref, cur = ref + 1e-6, cur + 1e-6
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _shares(sorted_values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """The share of (sorted) values in each bin between consecutive edges, the ends open."""
    bounds = np.empty(len(inner_edges) + 2)
    bounds[0], bounds[-1] = 0, len(sorted_values)
    bounds[1:-1] = np.searchsorted(sorted_values, inner_edges, "right")
    return (bounds[1:] - bounds[:-1]) / len(sorted_values)


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


@dataclass
class _Numeric:
    values: np.ndarray  # sorted, without NaN
    scale: float
    psi_edges: np.ndarray
    lo: float
    hi: float
    psi_shares: np.ndarray | None = None  # the reference's shares in its own PSI bins


@dataclass
class _Categorical:
    counts: dict[str, float]


@dataclass
class ReferenceStats:
    """What the drift rule needs of the reference, computed once per version."""

    features: dict[str, _Numeric | _Categorical] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    #: the last window judged, per feature: sorted numbers or category counts (the overlay reuses them)
    live: dict[str, np.ndarray | dict[str, float]] = field(default_factory=dict)

    @classmethod
    def build(cls, reference: pd.DataFrame, categorical: Iterable[str] = ()) -> ReferenceStats:
        cats = set(categorical)
        out = cls()
        for col in reference.columns:
            out.add(str(col), reference[col], str(col) in cats)
        return out

    def add(self, name: str, ref: pd.Series, categorical: bool = False) -> None:
        if categorical or not _is_numeric(ref):
            counts = ref.dropna().astype(str).value_counts()
            self.features[name] = _Categorical({str(k): float(v) for k, v in counts.items()})
            self.n[name] = int(counts.sum())
            return
        values = np.sort(ref.to_numpy(float))
        values = values[~np.isnan(values)]
        self.n[name] = len(values)
        if not len(values):
            self.features[name] = _Numeric(values, 1.0, np.array([]), 0.0, 1.0)
            return
        edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
        lo, hi = np.quantile(values, [0.005, 0.995])
        shares = _shares(values, edges[1:-1]) if len(edges) >= 2 else None
        self.features[name] = _Numeric(values, float(np.std(values)) or 1.0, edges, float(lo), float(hi), shares)


def _ks_wasserstein(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """(KS statistic, Wasserstein-1 distance) of two sorted samples, from one stable merge of their values: each
    empirical CDF is a running count of where the merged values came from; a tie is read at its last position."""
    both = np.concatenate([ref, cur])
    order = np.argsort(both, kind="stable")  # two sorted runs: a linear merge
    merged = both[order]
    from_ref = order < len(ref)
    gap = np.abs(np.cumsum(from_ref) / len(ref) - np.cumsum(~from_ref) / len(cur))
    last = np.empty(len(merged), dtype=bool)
    np.not_equal(merged[1:], merged[:-1], out=last[:-1])
    last[-1] = True
    return float(gap[last].max()), float(np.dot(gap[:-1], merged[1:] - merged[:-1]))


def _ks_p(d: float, n: int, m: int) -> float:
    """The asymptotic two-sample KS p-value (Stephens' correction), as scipy's ``method='asymp'``."""
    en = np.sqrt(n * m / (n + m))
    return float(np.clip(special.kolmogorov((en + 0.12 + 0.11 / en) * d), 0.0, 1.0))


def histogram(ref: np.ndarray, cur: np.ndarray, lo: float, hi: float, bins: int = HIST_BINS) -> dict[str, Any]:
    """Shares of reference and live values (both sorted) in common bins (the overlay's bars); out-of-range values
    in the ends."""
    if len(cur):  # ``cur`` is sorted: its 0.5 % and 99.5 % points by index
        n = len(cur) - 1
        lo, hi = min(lo, float(cur[int(0.005 * n)])), max(hi, float(cur[int(np.ceil(0.995 * n))]))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    inner = edges[1:-1]

    def shares(values: np.ndarray) -> list[float]:
        return _shares(values, inner).round(5).tolist() if len(values) else [0.0] * bins

    return {"edges": [float(f"{e:.6g}") for e in edges.tolist()], "reference": shares(ref), "live": shares(cur)}


def _judge_numeric(name: str, r: _Numeric, values: np.ndarray, t: DriftThresholds, n_ref: int) -> dict[str, Any]:
    """``values``: the live window's, sorted, without NaN (as ``_judge`` keeps them for the overlay)."""
    row: dict[str, Any] = {"feature": name, "kind": "numeric", "n_reference": n_ref, "n_current": len(values)}
    if len(values) < t.min_current or not n_ref:
        return {**row, **_blank()}
    d, w = _ks_wasserstein(r.values, values)
    return {
        **row, "test": "ks", "statistic": d, "p_value": _ks_p(d, n_ref, len(values)), "effect": w / r.scale,
        "threshold": t.wasserstein, "psi": _psi(r.values, r.psi_edges, values, r.psi_shares),
    }  # fmt: skip


def category_counts(cur: pd.Series) -> dict[str, float]:
    """Counts per category as strings, missing values left out (factorize and bincount: a fifth of pandas'
    value_counts)."""
    codes, uniques = pd.factorize(cur.to_numpy(dtype=object), use_na_sentinel=True)
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    out: dict[str, float] = {}
    for key, n in zip(uniques.tolist(), counts.tolist(), strict=True):
        if n:
            out[str(key)] = out.get(str(key), 0.0) + float(n)  # 1 and "1" are one category as strings
    return out


def _judge_categorical(
    name: str, r: _Categorical, live: dict[str, float], t: DriftThresholds, n_ref: int
) -> dict[str, Any]:
    n_cur = int(sum(live.values()))
    row: dict[str, Any] = {"feature": name, "kind": "categorical", "n_reference": n_ref, "n_current": n_cur}
    if n_cur < t.min_current or not n_ref:
        return {**row, **_blank()}
    cats = sorted(set(r.counts) | set(live))
    ref_counts = np.array([r.counts.get(c, 0.0) for c in cats])
    cur_counts = np.array([live.get(c, 0.0) for c in cats])
    if len(cats) < 2:
        return {**row, "test": "chi2", "statistic": 0.0, "p_value": 1.0, "effect": 0.0,
                "threshold": t.jensen_shannon, "psi": np.nan}  # fmt: skip
    table = np.vstack([ref_counts, cur_counts])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))  # as chi2_contingency, without its overhead
    p = float(special.chdtrc(len(cats) - 1, stat))
    js = float(jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), base=2))
    return {**row, "test": "chi2", "statistic": stat, "p_value": p, "effect": js, "threshold": t.jensen_shannon,
            "psi": np.nan}  # fmt: skip


def _blank() -> dict[str, Any]:
    return {"test": "too few rows", **dict.fromkeys(("statistic", "p_value", "effect", "threshold", "psi"), np.nan)}


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN stays NaN and is not counted."""
    p = np.asarray(p, float)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if not m:
        return q
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    q[ok] = out
    return q


def compute(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    reference_predictions: Any = None,
    current_predictions: Any = None,
    thresholds: DriftThresholds | None = None,
    *,
    stats_cache: ReferenceStats | None = None,
    previous: Iterable[str] = (),
) -> pd.DataFrame:
    """One row per feature (and ``prediction``): test, statistic, p- and BH q-value, effect size, ``drifted``.

    ``stats_cache``: the reference's ``ReferenceStats`` (built here when not given). ``previous``: the features
    flagged at the last judgement, for the hysteresis. Only the latest ``thresholds.window`` live rows count.
    """
    t = thresholds or DriftThresholds()
    current = current.iloc[-t.window :] if len(current) > t.window else current
    cache = stats_cache or ReferenceStats.build(reference)
    rows: list[dict[str, Any]] = []
    for c in reference.columns:
        if str(c) not in cache.features:
            cache.add(str(c), reference[c])
    numeric = [c for c in reference.columns if isinstance(cache.features[str(c)], _Numeric) and c in current]
    try:  # one conversion for every numeric column, not one each
        matrix = current[numeric].to_numpy(dtype=float)
        by_name = {str(c): matrix[:, i] for i, c in enumerate(numeric)}
    except (TypeError, ValueError):
        by_name = {str(c): pd.to_numeric(current[c], errors="coerce").to_numpy(float) for c in numeric}
    for c in reference.columns:
        name = str(c)
        cur = by_name.get(name) if name in by_name else current[c] if c in current else pd.Series(dtype=float)
        rows.append(_judge(name, cache, cur, t))
    if reference_predictions is not None and current_predictions is not None:
        ref_p, cur_p = pd.Series(np.asarray(reference_predictions)), pd.Series(np.asarray(current_predictions))
        cur_p = cur_p.iloc[-t.window :]
        if "prediction" not in cache.features:
            labels = not _is_numeric(ref_p) or (pd.api.types.is_integer_dtype(ref_p) and ref_p.nunique() <= 20)
            cache.add("prediction", ref_p, labels)
        rows.append(_judge("prediction", cache, cur_p, t))
    frame = pd.DataFrame(rows, columns=["feature", *COLUMNS]).set_index("feature")
    frame["q_value"] = benjamini_hochberg(frame["p_value"].to_numpy(float))
    frame["drifted"] = _flags(frame, t, set(previous))
    return frame[COLUMNS]


def _judge(name: str, cache: ReferenceStats, cur: Any, t: DriftThresholds) -> dict[str, Any]:
    ref = cache.features[name]
    if isinstance(ref, _Numeric):
        values = cur if isinstance(cur, np.ndarray) else pd.to_numeric(cur, errors="coerce").to_numpy(float)
        values = np.sort(values[~np.isnan(values)])
        cache.live[name] = values
        return _judge_numeric(name, ref, values, t, cache.n[name])
    counts = category_counts(cur if isinstance(cur, pd.Series) else pd.Series(cur))
    cache.live[name] = counts
    return _judge_categorical(name, ref, counts, t, cache.n[name])


def _flags(frame: pd.DataFrame, t: DriftThresholds, previous: set[str]) -> np.ndarray:
    q, effect, threshold = (frame[k].to_numpy(float) for k in ("q_value", "effect", "threshold"))
    with np.errstate(invalid="ignore"):
        enter = (q < t.fdr) & (effect >= threshold)
        stay = (q < min(1.0, 2 * t.fdr)) & (effect >= t.release * threshold)
    was = np.array([str(f) in previous for f in frame.index], dtype=bool)
    return np.where(was, stay, enter) & ~np.isnan(q)


def dataset_drifted(frame: pd.DataFrame, t: DriftThresholds | None = None) -> bool:
    """The dataset rule: at least ``dataset_share`` of the judged features (not the prediction) flagged."""
    t = t or DriftThresholds()
    features = frame.drop(index="prediction", errors="ignore")
    judged = features[features["test"] != "too few rows"]
    return bool(len(judged)) and float(judged["drifted"].mean()) >= t.dataset_share
