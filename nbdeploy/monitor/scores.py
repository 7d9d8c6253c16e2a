"""AUC, log-loss and calibration of logged probabilities (``predict_proba`` answers) against feedback.

numpy and scipy only: scikit-learn is no dependency of nbdeploy, so these follow ``sklearn.metrics`` by formula
(the tests compare them with it). Binary: the positive class is ``classes[1]``, as scikit-learn's; multiclass: AUC
is one-vs-rest, macro-averaged, and calibration is of the top class (its probability against being right).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

__all__ = ["CALIBRATION_COLUMNS", "ProbabilityScores", "calibration_table", "evaluate", "log_loss", "roc_auc"]

CALIBRATION_COLUMNS = ["bin_lower", "bin_upper", "mean_predicted", "observed", "count"]


@dataclass
class ProbabilityScores:
    """What logged probabilities and their feedback tell: None where there are too few rows to tell it."""

    auc: float | None = None
    log_loss: float | None = None
    rows: int = 0  # labelled rows with probabilities (and a label among the classes)
    unmatched: int = 0  # labelled rows whose label is none of the model's classes: left out
    classes: list[Any] = field(default_factory=list)
    calibration: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CALIBRATION_COLUMNS), repr=False)

    @property
    def positive_class(self) -> Any:
        """The class a binary AUC and calibration are of (None for multiclass)."""
        return self.classes[1] if len(self.classes) == 2 else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "log_loss": self.log_loss,
            "rows": self.rows,
            "unmatched": self.unmatched,
            "classes": self.classes,
            "positive_class": self.positive_class,
        }


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Mann-Whitney: the chance a positive outranks a negative, ties counting one half (as ``roc_auc_score``)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None  # undefined with one class only
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(target: np.ndarray, proba: np.ndarray) -> float | None:
    """AUC from class indices ``target`` and probabilities (rows x classes): binary of class 1, else one-vs-rest
    macro over the classes that occur with both outcomes."""
    if proba.shape[1] == 2:
        return _binary_auc(target == 1, proba[:, 1])
    per_class = [_binary_auc(target == k, proba[:, k]) for k in range(proba.shape[1])]
    known = [a for a in per_class if a is not None]
    return float(np.mean(known)) if known else None


def log_loss(target: np.ndarray, proba: np.ndarray) -> float | None:
    """Mean negative log of the probability given to the true class, clipped to [eps, 1 - eps] as scikit-learn."""
    if not len(target):
        return None
    eps = np.finfo(proba.dtype).eps
    p = np.clip(proba[np.arange(len(target)), target], eps, 1 - eps)
    return float(np.mean(-np.log(p)))


def calibration_table(target: np.ndarray, proba: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per probability bin of equal width: mean predicted, observed frequency, count (empty bins left out). The
    bins are ``sklearn.calibration.calibration_curve``'s (strategy "uniform")."""
    if not len(target):
        return pd.DataFrame(columns=CALIBRATION_COLUMNS)
    if proba.shape[1] == 2:
        p, hit = proba[:, 1], target == 1
    else:
        p, hit = proba.max(axis=1), proba.argmax(axis=1) == target
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    count = np.bincount(ids, minlength=bins)
    sum_p = np.bincount(ids, weights=p, minlength=bins)
    sum_hit = np.bincount(ids, weights=hit.astype(float), minlength=bins)
    kept = count > 0
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1][kept],
            "bin_upper": edges[1:][kept],
            "mean_predicted": sum_p[kept] / count[kept],
            "observed": sum_hit[kept] / count[kept],
            "count": count[kept].astype(int),
        }
    )


def evaluate(frame: pd.DataFrame, proba: np.ndarray, classes: list[Any], bins: int = 10) -> ProbabilityScores:
    """Scores of ``RequestLog.scored()``'s rows. Labels match classes as text (JSON may turn 1 into "1");
    rows with a missing probability or a label outside the classes are left out."""
    out = ProbabilityScores(classes=list(classes))
    if not len(frame) or proba.ndim != 2 or proba.shape[1] != len(classes) or len(classes) < 2:
        return out
    index = {str(c): i for i, c in enumerate(classes)}
    target = np.asarray([index.get(str(y), -1) for y in frame["y_true"]], dtype=int)
    usable = (target >= 0) & ~np.isnan(proba).any(axis=1)
    out.unmatched = int((target < 0).sum())
    target, proba = target[usable], proba[usable]
    out.rows = len(target)
    out.auc = roc_auc(target, proba)
    out.log_loss = log_loss(target, proba)
    out.calibration = calibration_table(target, proba, bins)
    return out
