"""Closed windows of a version's request log, as the rules read them: per request and per row.

Time windows tumble on the epoch (``[k·w, (k+1)·w)``), so every rule with the same window sees the same rows and
a restarted scheduler finds the same boundaries; a window is closed once its end is ``GRACE_S`` in the past (the
service's recorder writes in small batches). Count windows are the next ``n`` requests after a cursor.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..monitor.store import RequestLog, parse_logged

GRACE_S = 2.0


@dataclass
class WindowData:
    """One window: per request (status, latency) and per answered row (inputs, prediction, top probability,
    ground truth when it came back)."""

    start: float
    end: float
    status: np.ndarray
    latency_ms: np.ndarray
    inputs: pd.DataFrame
    predictions: np.ndarray
    y_true: np.ndarray  # object array, None where no label came back
    top_probability: np.ndarray  # NaN where the request did not ask for probabilities
    request_ids: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.status)

    @property
    def labelled(self) -> np.ndarray:
        return np.array([y is not None for y in self.y_true], dtype=bool)


def _top(scores: Any, n: int) -> list[float]:
    record = json.loads(scores) if isinstance(scores, str) else None
    if not isinstance(record, dict) or record.get("method") != "predict_proba":
        return [math.nan] * n
    values = record.get("values")
    if not isinstance(values, list):
        return [math.nan] * n
    out = []
    for row in values[:n]:
        nums = [v for v in row if isinstance(v, int | float)] if isinstance(row, list) else []
        out.append(float(max(nums)) if nums else math.nan)
    return out + [math.nan] * (n - len(out))


def parse(frame: pd.DataFrame, schema: dict[str, Any], start: float, end: float) -> WindowData:
    """A window from ``RequestLog.window``'s rows: requests that were refused count for errors and latency only."""
    ok = frame[frame["status"] == 200] if len(frame) else frame
    pairs = list(zip(ok.get("inputs", []), ok.get("outputs", []), strict=False))
    inputs_frame, preds, counts = parse_logged(pairs, schema)  # the requests' records validated as one batch
    truth: list[Any] = []
    top: list[float] = []
    ids: list[str] = []
    for rid, scores, y_true, n in zip(
        ok.get("request_id", []), ok.get("scores", []), ok.get("y_true", []), counts, strict=False
    ):
        if not n:
            continue
        labels = json.loads(y_true) if isinstance(y_true, str) else None
        labels = labels if isinstance(labels, list) or labels is None else [labels]
        truth.extend(labels[:n] + [None] * (n - len(labels[:n])) if labels is not None else [None] * n)
        top.extend(_top(scores, n))
        ids.extend([rid] * n)
    y = np.empty(len(truth), dtype=object)
    y[:] = truth
    return WindowData(
        start=start,
        end=end,
        status=frame["status"].to_numpy(int) if len(frame) else np.array([], dtype=int),
        latency_ms=frame["latency_ms"].to_numpy(float) if len(frame) else np.array([]),
        inputs=inputs_frame,
        predictions=np.asarray(preds),
        y_true=y,
        top_probability=np.asarray(top, dtype=float),
        request_ids=ids,
    )


def closed_time_windows(after: float, now: float, window_s: float) -> list[tuple[float, float]]:
    """The time windows that ended after ``after`` and before ``now - GRACE_S``, oldest first."""
    first = math.floor(after / window_s) * window_s
    if first + window_s <= after:
        first += window_s
    out = []
    start = first
    while start + window_s <= now - GRACE_S:
        if start + window_s > after:
            out.append((start, start + window_s))
        start += window_s
    return out


def time_window(log: RequestLog, schema: dict[str, Any], start: float, end: float) -> WindowData:
    return parse(log.window(start, end), schema, start, end)


def count_window(log: RequestLog, schema: dict[str, Any], after: float, n: int, now: float) -> WindowData | None:
    """The next ``n`` requests after ``after``, once they are all logged (None until then)."""
    frame = log.window(after, now - GRACE_S, limit=n)
    if len(frame) < n:
        return None
    return parse(frame, schema, after, float(frame["ts"].iloc[-1]))
