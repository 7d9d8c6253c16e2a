"""Each alert quantity measured on one window, with the evidence a person needs to believe it.

Drift reuses the panel's rule (``monitor.drift``): a feature counts only when its shift is significant after
Benjamini-Hochberg *and* its effect size is measured, so the value is an effect size (comparable across window
sizes), never a p-value that shrinks as traffic grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..monitor.drift import DriftThresholds, ReferenceStats, compute
from .incidents import Measurement
from .rules import AlertRule
from .windows import WindowData


@dataclass
class Baseline:
    """What the live version was deployed with: its reference sample and the session's predictions on it."""

    inputs: pd.DataFrame
    predictions: np.ndarray
    stats: ReferenceStats = field(default_factory=ReferenceStats)

    @classmethod
    def of(cls, inputs: pd.DataFrame, predictions: Any) -> Baseline:
        return cls(inputs, np.asarray(predictions), ReferenceStats.build(inputs))


def _skip(n: int, why: str) -> Measurement:
    return Measurement(math.nan, n, False, {"why": why})


def measure(rule: AlertRule, w: WindowData, baseline: Baseline | None) -> Measurement:
    """The rule's quantity on ``w``; not judged below ``rule.min_rows`` (rows, labelled rows or requests)."""
    q = rule.quantity
    if q == "volume":
        return Measurement(float(w.requests), w.requests, True, {"requests": w.requests})
    if q in ("error_rate", "latency"):
        if w.requests < max(rule.min_rows, 1):
            return _skip(w.requests, f"{w.requests} requests, fewer than {rule.min_rows}")
        if q == "error_rate":
            errors = int((w.status >= 400).sum())
            return Measurement(errors / w.requests, w.requests, True, {"errors": errors, "requests": w.requests})
        value = float(np.percentile(w.latency_ms, rule.percentile))
        return Measurement(value, w.requests, True, {"p50_ms": float(np.percentile(w.latency_ms, 50))})
    if q in ("accuracy", "mae"):
        return _labelled(rule, w)
    if q == "estimated_accuracy":
        top = w.top_probability[~np.isnan(w.top_probability)] if len(w.top_probability) else w.top_probability
        if len(top) < max(rule.min_rows, 1):
            return _skip(len(top), f"{len(top)} rows with probabilities, fewer than {rule.min_rows}")
        return Measurement(float(top.mean()), len(top), True, {"rows_with_probabilities": len(top)})
    return _drift(rule, w, baseline)


def _labelled(rule: AlertRule, w: WindowData) -> Measurement:
    has = w.labelled
    n = int(has.sum())
    if n < max(rule.min_rows, 1):
        return _skip(n, f"{n} labelled rows, fewer than {rule.min_rows}")
    pred, truth = w.predictions[has], w.y_true[has]
    if rule.quantity == "mae":
        err = np.abs(pd.to_numeric(pd.Series(pred), errors="coerce") - pd.to_numeric(pd.Series(truth), errors="coerce"))
        return Measurement(float(err.mean()), n, True, {"labelled": n})
    right = np.array([str(p) == str(t) for p, t in zip(pred, truth, strict=True)])
    return Measurement(float(right.mean()), n, True, {"labelled": n, "right": int(right.sum())})


def _drift(rule: AlertRule, w: WindowData, baseline: Baseline | None) -> Measurement:
    n = len(w.inputs)
    if baseline is None:
        return _skip(n, "no reference sample was kept for this version")
    if n < max(rule.min_rows, 1):
        return _skip(n, f"{n} rows, fewer than {rule.min_rows}")
    t = DriftThresholds(
        fdr=rule.fdr, wasserstein=rule.threshold, jensen_shannon=rule.threshold, min_current=rule.min_rows, window=n
    )
    wanted = rule.features
    reference = baseline.inputs if wanted is None else baseline.inputs[[c for c in wanted if c != "prediction"]]
    with_prediction = wanted is not None and "prediction" in wanted
    frame = compute(
        reference,
        w.inputs,
        baseline.predictions if with_prediction else None,
        w.predictions if with_prediction else None,
        t,
        stats_cache=baseline.stats,
    )
    judged = frame[frame["test"] != "too few rows"]
    significant = judged[judged["q_value"] < rule.fdr]
    value = float(significant["effect"].max()) if len(significant) else 0.0
    top = significant.sort_values("effect", ascending=False).head(5)
    evidence = {
        "rows": n,
        "features_judged": len(judged),
        "features_drifted": int(judged["drifted"].sum()),
        "top": [
            {"feature": str(f), "effect": round(float(r["effect"]), 4), "q": float(r["q_value"]), "test": r["test"]}
            for f, r in top.iterrows()
        ],
    }
    return Measurement(value, n, True, evidence)
