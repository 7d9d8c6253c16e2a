"""Monitoring: the request log, metrics, drift and ground truth of one deployment version."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pandas as pd

from .. import config
from ..errors import NbdeployError, PredictionError
from ..registry import Record
from .drift import DriftThresholds, compute
from .scores import ProbabilityScores, evaluate
from .store import RequestLog, accuracy_over_time, load_reference, logged_schema

__all__ = [
    "DriftThresholds",
    "ProbabilityScores",
    "RequestLog",
    "accuracy_over_time",
    "calibration",
    "drift",
    "log_for",
    "probability_metrics",
    "probability_scores",
    "send_feedback",
]


def log_for(record: Record) -> RequestLog:
    return RequestLog(config.deployment_dir(record.name, record.version))


def drift(record: Record, thresholds: DriftThresholds | None = None, max_rows: int = 5000) -> pd.DataFrame:
    """Per feature and for the prediction: live traffic against the deploy-time sample."""
    ref = load_reference(config.deployment_dir(record.name, record.version))
    if ref is None:
        raise NbdeployError(
            f"'{record.name}' v{record.version} has no reference sample to compare with",
            hint="redeploy it with this version of nbdeploy, which keeps the sample",
        )
    ref_inputs, ref_preds = ref
    current, preds = log_for(record).recent_rows(logged_schema(record.info), max_rows)
    if current.empty:
        current = ref_inputs.iloc[0:0]
        preds = np.asarray([])
    return compute(ref_inputs, current, ref_preds, preds, thresholds)


def probability_scores(record: Record, bins: int = 10) -> ProbabilityScores:
    """AUC, log-loss and calibration of a version's logged ``predict_proba`` answers that have feedback."""
    return evaluate(*log_for(record).scored("predict_proba"), bins=bins)


def probability_metrics(record: Record) -> dict[str, Any]:
    """``probability_scores`` as a dict: auc, log_loss, rows, unmatched, classes, positive_class."""
    return probability_scores(record).as_dict()


def calibration(record: Record, bins: int = 10) -> pd.DataFrame:
    """The calibration table: per bin of predicted probability, mean predicted, observed frequency, count."""
    return probability_scores(record, bins).calibration


def send_feedback(url: str, request_ids: list[str], y_true: list[Any], headers: dict[str, str] | None = None) -> int:
    """POST ground truth for earlier requests; ``y_true[i]`` holds the labels of request ``request_ids[i]``."""
    if len(request_ids) != len(y_true):
        raise NbdeployError(f"{len(request_ids)} request ids but {len(y_true)} sets of labels")
    items = [
        {"request_id": rid, "y_true": np.asarray(y).tolist() if not isinstance(y, (str, int, float)) else [y]}
        for rid, y in zip(request_ids, y_true, strict=True)
    ]
    resp = httpx.post(f"{url}/feedback", json={"items": items}, headers=headers, timeout=30)
    if resp.status_code != 200:
        raise PredictionError(f"feedback refused ({resp.status_code}): {resp.text[:300]}", status=resp.status_code)
    return int(resp.json()["accepted"])
