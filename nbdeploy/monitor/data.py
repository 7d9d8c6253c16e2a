"""What the panel shows, computed without widgets or drawing: ``snapshot`` -> ``PanelData``.

Tiles from the service's ``/metrics`` counters and the request log, traffic and latency per time
bucket, drift and the prediction distribution against the deploy-time sample, how much each judged feature's
shift alone moves the predictions (``attribution``), accuracy from
feedback, AUC, log-loss and calibration of logged probabilities, the name's timeline (alerts, retrainings,
promotions, rollbacks). Tests call ``snapshot`` directly;
``figures``, ``html`` and ``widget`` only read its result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import config
from ..registry import Record, Registry
from . import metrics
from .attribution import Attribution, ReferenceAttribution
from .cache import LogCache
from .drift import DriftThresholds, ReferenceStats, _Categorical, _Numeric, compute, dataset_drifted, histogram
from .history import timeline
from .scores import CALIBRATION_COLUMNS, evaluate
from .source import Source, StatusFn, Watched, watch
from .store import RequestLog, accuracy_over_time, load_reference, logged_schema

if TYPE_CHECKING:
    from .judge import Judge

__all__ = ["ENDED", "PanelData", "judge_drift", "snapshot"]

log = logging.getLogger(__name__)

ENDED = ("stopped", "failed")  # statuses after which a live panel stops refreshing
THROTTLE_ROWS = 200  # drift is recomputed on every refresh until it has this many live rows
BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_BUCKETS = 60


@dataclass
class PanelData:
    """Everything one view of the panel shows, computed without widgets or drawing."""

    name: str
    version: int
    status: str  # running, degraded, stopped, failed
    url: str | None
    at: float  # when it was taken (epoch seconds)
    total_requests: int | None = None  # /predict requests since the service started (or in the log, see below)
    total_from: str = "metrics"  # "metrics": the service's counter; "log": the request log (service unreachable)
    errors: int | None = None  # of those, answered with a non-2xx status
    rate: float | None = None  # requests/s over ``window_s``
    p50_ms: float | None = None  # latency inside the service (request log) over ``window_s``
    p95_ms: float | None = None
    error_rate: float | None = None  # errors / requests over ``window_s`` (0..1)
    window_s: float = 0.0  # the span the rate, percentiles and error rate cover
    source: str = "log"  # where rate and error rate come from: "metrics" (two scrapes) or "log" (request log)
    dropped_records: int = 0  # request records the service dropped under pressure (not in the log)
    logged_requests: int = 0  # requests in the log within ``history_s``
    # per time bucket: requests, errors, rate (requests/s), p50_ms, p95_ms (from the request log)
    traffic: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    bucket_s: float = 0.0
    drift: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)  # monitor.drift's table (empty: none)
    drifted: list[str] = field(default_factory=list)  # features (not the prediction) that drifted
    reference_predictions: np.ndarray | None = field(default=None, repr=False)
    live_predictions: np.ndarray = field(default_factory=lambda: np.array([]), repr=False)
    labels: bool = True  # predictions are class labels (bars) rather than numbers (histogram)
    accuracy: float | None = None  # share of labelled rows predicted right (class labels)
    mae: float | None = None  # mean absolute error over labelled rows (numbers)
    labelled: int = 0  # rows with ground truth from feedback
    accuracy_over_time: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)  # store.accuracy_over_time
    accuracy_bucket_s: int = 60  # the time bucket of ``accuracy_over_time``
    # logged predict_proba answers joined with feedback (monitor.scores): None until both exist
    auc: float | None = None  # binary: of the positive class; multiclass: one-vs-rest macro
    log_loss: float | None = None
    scored: int = 0  # labelled rows with probabilities
    positive_class: Any = None  # binary only
    calibration: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CALIBRATION_COLUMNS), repr=False)
    problems: list[str] = field(default_factory=list)  # what could not be read, in words
    dataset_drift: bool = False  # the dataset rule (DriftThresholds.dataset_share) holds
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)  # the rule drift was judged by
    drift_rows: int = 0  # live rows in the judged window
    # per feature (and "prediction"): reference and live shares in common bins, or per category
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    # which judged features' shifts alone move the predictions, and the observed change (monitor.attribution)
    attribution: Attribution | None = field(default=None, repr=False)
    drift_at: float = 0.0  # when the drift part (drift, predictions) was computed
    drift_basis: tuple[int, float] = field(default=(0, 0.0), repr=False)  # successful requests seen then
    scrape: metrics.Scrape | None = field(default=None, repr=False)  # for the next window
    # the name's latest alerts, retrainings, promotions and rollbacks, oldest first (``history.row``'s dicts)
    timeline: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # the drift part of the browser's view model as JSON, when it was computed with the drift (the judge process)
    drift_view: str | None = field(default=None, repr=False)


def snapshot(
    deployment: Source | Record | str | Watched,
    previous: metrics.Scrape | None = None,
    *,
    window_s: float = 60.0,
    history_s: float = 900.0,
    max_rows: int = 5000,
    thresholds: DriftThresholds | None = None,
    registry: Registry | None = None,
    reuse: PanelData | None = None,
    drift_every_s: float = 0.0,
    status: StatusFn | None = None,
    cache: LogCache | None = None,
    judge: Judge | None = None,
) -> PanelData:
    """What the panel shows now, for a ``Deployment`` handle, a registry ``Record`` or a deployment name.

    The status is the handle's ``status()`` (or ``status()`` when given); for a Record or a name
    without ``status``, the registry's.

    With ``previous`` (an earlier ``PanelData.scrape``) the rate and error rate are the difference
    of BentoML's ``/metrics`` counters between the two scrapes; without it they come from the
    request log's last ``window_s`` seconds. Latency percentiles always come from the request log
    (exact; the time inside the service). The total request count is the service's counter (the
    log's count when ``/metrics`` cannot be read). Parts that cannot be read are listed in
    ``problems`` instead of raising.

    Drift and the prediction distribution (the costly part: it parses the logged inputs) are taken
    from ``reuse``, an earlier snapshot of the same version, when no successful request arrived
    since it or it is younger than ``drift_every_s``.

    ``cache`` (a live panel's ``LogCache``): read only what the log gained since the last refresh, keep the
    reference's statistics and the drift flags (hysteresis) between refreshes. ``judge`` (with ``cache``): drift is
    judged again in that process (``monitor.judge``), not in the caller's, once ``reuse`` exists.
    """
    registry = registry or Registry()
    rec, state = watch(deployment, registry, status).read(registry)
    now = time.time()
    data = PanelData(rec.name, rec.version, state, rec.url, now, thresholds=thresholds or DriftThresholds())
    reqlog = RequestLog(config.deployment_dir(rec.name, rec.version))
    _scrape(data, cache.http() if cache is not None else None)
    if cache is not None:
        cache.update()
        frame = cache.requests(since=now - history_s)
    else:
        frame = reqlog.requests(since=now - history_s)
    data.logged_requests = len(frame)
    data.traffic, data.bucket_s = _traffic(frame, now)
    _rates(data, frame, previous, window_s)
    if data.total_requests is None:
        everything = cache.requests() if cache is not None else reqlog.requests()
        data.total_requests, data.total_from = len(everything), "log"
        data.errors = int((everything["status"] != 200).sum())
    _drift(data, frame, rec, reqlog, reuse, max_rows, thresholds, drift_every_s, cache, judge)
    _timeline(data, registry)
    if cache is not None and reuse is not None and not cache.feedback_changed():
        for name in FEEDBACK_FIELDS:  # no new feedback: the same scores
            setattr(data, name, getattr(reuse, name))
        data.problems += [p for p in reuse.problems if "accuracy" in p or "AUC" in p]
    else:
        _accuracy(data, reqlog)
        _probabilities(data, reqlog)
    return data


FEEDBACK_FIELDS = (
    "accuracy", "mae", "labelled", "accuracy_over_time", "accuracy_bucket_s", "auc", "log_loss", "scored",
    "positive_class", "calibration",
)  # fmt: skip


def _timeline(data: PanelData, registry: Registry) -> None:
    """The name's timeline events (one registry query)."""
    try:
        data.timeline = timeline(data.name, registry)
    except Exception as exc:  # a locked or older registry: keep the rest of the panel
        log.debug("timeline failed", exc_info=True)
        data.problems.append(f"the history could not be read: {type(exc).__name__}: {exc}")


def _scrape(data: PanelData, client: Any = None) -> None:
    """The service's counters (total, errors, dropped records) while it may be up."""
    if data.status not in ENDED and data.url:
        try:
            data.scrape = metrics.scrape(data.url, client=client, timeout=3.0)
        except Exception as exc:  # the service may be starting, stopping or busy: say so, keep the rest
            data.problems.append(f"could not read {data.url}/metrics: {type(exc).__name__}: {exc}")
    if data.scrape is not None and not data.scrape.requests and not data.scrape.buckets:
        data.scrape = None  # not BentoML's counters (the edge server's): count from the request log
    cur = data.scrape
    if cur is not None:
        data.total_requests, data.errors = int(cur.total), int(cur.errors)
        data.dropped_records = int(cur.dropped_records)


def _rates(data: PanelData, frame: pd.DataFrame, previous: metrics.Scrape | None, window_s: float) -> None:
    """Rate and error rate (two scrapes, else the log), latency percentiles (the log)."""
    now, cur = data.at, data.scrape
    if cur is not None and previous is not None and cur.at > previous.at and cur.total >= previous.total:
        w = metrics.window(previous, cur)
        data.source, data.window_s = "metrics", w.seconds
        data.rate, data.error_rate = w.rate, (w.error_rate if w.requests else None)
    recent = frame[frame["ts"] >= now - (data.window_s or window_s)]
    if data.source == "log":
        data.window_s = window_s
        data.rate = len(recent) / window_s
        data.error_rate = float((recent["status"] != 200).mean()) if len(recent) else None
    # Latency percentiles come from the log in both cases: exact, and what the chart shows. BentoML's
    # histogram has Prometheus' default buckets (5, 10, 25, 50 ms, ...), too coarse for fast models.
    # ...over at least ``window_s``: the log trails the metrics by the recorder's linger, and a
    # percentile of the few requests between two quick scrapes means little
    lat_window = frame[frame["ts"] >= now - max(data.window_s or 0.0, window_s)]
    answered = lat_window.loc[lat_window["status"] == 200, "latency_ms"]
    if len(answered):
        data.p50_ms, data.p95_ms = float(answered.quantile(0.5)), float(answered.quantile(0.95))


def _bucket(span_s: float) -> int:
    return next((b for b in BUCKETS_S if span_s / b <= MAX_BUCKETS), BUCKETS_S[-1])


def _traffic(frame: pd.DataFrame, now: float) -> tuple[pd.DataFrame, int]:
    """Per time bucket: requests, errors, requests/s and latency percentiles (ms), gaps filled with zeros."""
    cols = ["requests", "errors", "rate", "p50_ms", "p95_ms"]
    if frame.empty:
        return pd.DataFrame(columns=cols), 0
    bucket = _bucket(now - float(frame["ts"].min()))
    start = (frame["ts"] // bucket * bucket).astype(float)
    ok = frame["status"] == 200
    grouped = frame.assign(start=start, error=~ok, ok_latency=frame["latency_ms"].where(ok)).groupby("start")
    out = pd.DataFrame(
        {
            "requests": grouped.size(),
            "errors": grouped["error"].sum(),
            "p50_ms": grouped["ok_latency"].quantile(0.5),
            "p95_ms": grouped["ok_latency"].quantile(0.95),
        }
    )
    full = np.arange(out.index.min(), now // bucket * bucket + bucket / 2, bucket)
    out = out.reindex(full)
    out[["requests", "errors"]] = out[["requests", "errors"]].fillna(0).astype(int)
    seconds = np.clip(now - out.index.to_numpy(float), 1.0, bucket)  # the current bucket is still filling
    out["rate"] = out["requests"] / seconds
    out.index = pd.to_datetime(out.index, unit="s", utc=True)
    out.index.name = "time"
    return out[cols], bucket


DRIFT_FIELDS = (
    "drift", "drifted", "reference_predictions", "live_predictions", "labels", "drift_at", "drift_basis",
    "dataset_drift", "drift_rows", "distributions", "attribution", "drift_view",
)  # fmt: skip


def _drift(
    data: PanelData,
    frame: pd.DataFrame,
    rec: Record,
    reqlog: RequestLog,
    reuse: PanelData | None,
    max_rows: int,
    thresholds: DriftThresholds | None,
    drift_every_s: float,
    cache: LogCache | None = None,
    judge: Judge | None = None,
) -> None:
    """Drift and the prediction distribution: ``reuse``'s when still current, else computed now (by ``judge``'s
    process when there is one: ``reuse`` kept while its answer is on the way)."""
    answered = frame[frame["status"] == 200]
    data.drift_basis = (len(answered), float(answered["ts"].max()) if len(answered) else 0.0)
    if reuse is not None and (reuse.name, reuse.version) == (rec.name, rec.version):
        busy = len(reuse.live_predictions) >= THROTTLE_ROWS  # below that, parsing the rows is cheap
        if reuse.drift_basis == data.drift_basis or (busy and data.at - reuse.drift_at < drift_every_s):
            _copy_drift(reuse, data)
            return
        if judge is not None and cache is not None:
            judged = judge.judge(data, cache, max_rows)
            if judged is not None:
                if not judged:  # asked; the answer comes with a later refresh
                    _copy_drift(reuse, data)
                return
    judge_drift(data, rec, _KeptRows(reqlog.directory) if cache is None else reqlog, max_rows, thresholds, cache)


def judge_drift(
    data: PanelData,
    rec: Record | None,
    reqlog: RequestLog,
    max_rows: int,
    thresholds: DriftThresholds | None,
    cache: LogCache | None,
) -> None:
    """Drift, the distributions and the attribution now; what fails is said in ``data.problems``."""
    try:
        _drift_part(data, rec, reqlog, max_rows, thresholds, cache)
    except Exception as exc:  # keep the rest of the panel
        log.debug("drift failed", exc_info=True)
        data.problems.append(f"drift could not be computed: {type(exc).__name__}: {exc}")
        return
    try:
        _attribute(data, reqlog, max_rows, cache)
    except Exception as exc:
        log.debug("attribution failed", exc_info=True)
        data.problems.append(f"the attribution could not be computed: {type(exc).__name__}: {exc}")


def _copy_drift(source: PanelData, data: PanelData) -> None:
    for name in DRIFT_FIELDS:
        setattr(data, name, getattr(source, name))
    data.problems += [p for p in source.problems if "reference" in p]


class _KeptRows(RequestLog):
    """The request log, keeping the live rows the drift read for the attribution (no ``LogCache`` to ask)."""

    rows: tuple[pd.DataFrame, np.ndarray] | None = None

    def recent_rows(self, schema: dict[str, Any], max_rows: int = 5000) -> tuple[pd.DataFrame, np.ndarray]:
        self.rows = super().recent_rows(schema, max_rows)
        return self.rows


def _attribute(data: PanelData, reqlog: RequestLog, max_rows: int, cache: LogCache | None) -> None:
    """How much each judged feature's shift alone moves the predictions (``monitor.attribution``): the reference
    side once per version (``cache``), the live window binned now."""
    if data.drift.empty or data.reference_predictions is None:
        return
    features = data.drift.drop(index="prediction", errors="ignore")
    judged = [str(f) for f in features.index[features["test"] != "too few rows"]]
    if not judged:
        return
    if cache is not None:
        ref = cache.reference_attribution(data.labels)
        live, preds = cache.rows(min(max_rows, data.thresholds.window))
    else:
        loaded = load_reference(reqlog.directory)
        ref = ReferenceAttribution.build(*loaded, data.labels) if loaded is not None else None
        kept = reqlog.rows if isinstance(reqlog, _KeptRows) else None
        live, preds = kept if kept is not None else (pd.DataFrame(), np.array([]))
    if ref is not None:
        data.attribution = ref.attribute(live.iloc[-data.thresholds.window :], preds[-data.thresholds.window :], judged)


def _drift_part(
    data: PanelData,
    rec: Record | None,
    reqlog: RequestLog,
    max_rows: int,
    thresholds: DriftThresholds | None,
    cache: LogCache | None = None,
) -> None:
    data.drift_at = data.at
    t = data.thresholds
    window = min(max_rows, t.window)
    if cache is not None:
        ref = cache.load_reference()
        current, preds = cache.rows(window)
    else:
        ref = load_reference(reqlog.directory)
        schema = logged_schema(rec.info) if rec is not None and rec.info.schema else {}
        current, preds = reqlog.recent_rows(schema, window) if schema else (pd.DataFrame(), np.array([]))
    data.live_predictions = np.asarray(preds)
    data.drift_rows = len(current)
    if ref is None:
        data.problems.append("no reference sample kept for this version: no drift (redeploy to get one)")
    else:
        ref_inputs, ref_preds = ref
        data.reference_predictions = np.asarray(ref_preds)
        data.labels = _is_labels(data.reference_predictions)
        live = current if not current.empty else ref_inputs.iloc[0:0]
        live_preds = preds if len(preds) else np.asarray([])
        stats_cache = cache.ref_stats if cache is not None else None
        previous = cache.flags if cache is not None else ()
        data.drift = compute(ref_inputs, live, ref_preds, live_preds, t, stats_cache=stats_cache, previous=previous)
        data.drifted = [str(f) for f in data.drift.index[data.drift["drifted"]] if f != "prediction"]
        data.dataset_drift = dataset_drifted(data.drift, t)
        data.distributions = _distributions(
            ref_inputs, live, data.reference_predictions, live_preds, data.labels, stats_cache
        )
        if cache is not None and len(live):
            cache.judged(data.at, len(live), data.drift, t)
    if ref is None and len(preds):
        data.labels = _is_labels(data.live_predictions)


def _is_labels(values: np.ndarray) -> bool:
    s = pd.Series(values)
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    return not numeric or (pd.api.types.is_integer_dtype(s) and s.nunique() <= 20)


def _accuracy(data: PanelData, reqlog: RequestLog) -> None:
    """Accuracy (or MAE) overall and over time, from the feedback joined to the logged predictions."""
    try:
        joined = reqlog.feedback()
        data.labelled = len(joined)
        data.accuracy, data.mae = _overall(joined)
        data.accuracy_bucket_s = _accuracy_bucket(joined)
        data.accuracy_over_time = accuracy_over_time(joined, f"{data.accuracy_bucket_s}s")
    except Exception as exc:
        log.debug("accuracy failed", exc_info=True)
        data.problems.append(f"accuracy could not be computed: {type(exc).__name__}: {exc}")


def _overall(joined: pd.DataFrame) -> tuple[float | None, float | None]:
    """(accuracy, mae) over every labelled row, following store.accuracy_over_time's choice of metric."""
    if joined.empty:
        return None, None
    if pd.api.types.is_float_dtype(pd.Series(joined["y_true"]).infer_objects()):
        err = (pd.to_numeric(joined["y_pred"]) - pd.to_numeric(joined["y_true"])).abs()
        return None, float(err.mean())
    return float((joined["y_pred"].astype(str) == joined["y_true"].astype(str)).mean()), None


def _accuracy_bucket(joined: pd.DataFrame) -> int:
    """Seconds per accuracy point: at least 10, and up to ~30 points over the labelled span."""
    span = float(joined["ts"].max() - joined["ts"].min()) if len(joined) else 0.0
    return next((b for b in BUCKETS_S if b >= 10 and span / b <= 30), BUCKETS_S[-1])


def _probabilities(data: PanelData, reqlog: RequestLog) -> None:
    """AUC, log-loss and the calibration table from logged probabilities and their feedback."""
    try:
        scores = evaluate(*reqlog.scored("predict_proba"))
    except Exception as exc:
        log.debug("probability scores failed", exc_info=True)
        data.problems.append(f"AUC and log-loss could not be computed: {type(exc).__name__}: {exc}")
        return
    data.auc, data.log_loss, data.scored = scores.auc, scores.log_loss, scores.rows
    data.positive_class, data.calibration = scores.positive_class, scores.calibration


def _distributions(
    ref: pd.DataFrame,
    live: pd.DataFrame,
    ref_preds: np.ndarray,
    live_preds: np.ndarray,
    labels: bool,
    stats_cache: ReferenceStats | None = None,
) -> dict[str, dict[str, Any]]:
    """Reference and live shares per feature and for the prediction: common bins for numbers, per category."""
    out: dict[str, dict[str, Any]] = {}
    columns: list[tuple[str, Any]] = [(str(c), c) for c in ref.columns]
    columns.append(("prediction", None))
    for name, c in columns:
        cached = stats_cache.features.get(name) if stats_cache is not None else None
        seen = stats_cache.live.get(name) if stats_cache is not None else None
        if isinstance(cached, _Numeric) and len(cached.values) and isinstance(seen, np.ndarray):
            out[name] = {"kind": "numeric", **histogram(cached.values, seen, cached.lo, cached.hi)}
            continue  # what the drift rule judged: no column of either frame is read again
        if isinstance(cached, _Categorical) and isinstance(seen, dict):
            out[name] = _bars(cached.counts, seen)
            continue
        if c is None:
            r, cur, categorical = pd.Series(ref_preds), pd.Series(live_preds), labels
        else:
            r, cur, categorical = ref[c], live[c] if c in live else pd.Series(dtype=float), False
        numeric = not categorical and pd.api.types.is_numeric_dtype(r) and not pd.api.types.is_bool_dtype(r)
        if numeric:
            rv = r.to_numpy(float)
            rv = np.sort(rv[~np.isnan(rv)])
            cv = pd.to_numeric(cur, errors="coerce").to_numpy(float)
            cv = cv[~np.isnan(cv)]
            if not len(rv):
                continue
            lo, hi = np.quantile(rv, [0.005, 0.995])
            out[name] = {"kind": "numeric", **histogram(rv, np.sort(cv), float(lo), float(hi))}
        else:
            rc = r.dropna().astype(str).value_counts(normalize=True)
            cc = cur.dropna().astype(str).value_counts(normalize=True)
            cats = list(dict.fromkeys([*rc.index[:30], *cc.index[:30]]))[:40]
            out[name] = {
                "kind": "categorical", "categories": cats,
                "reference": [round(float(rc.get(c, 0.0)), 5) for c in cats],
                "live": [round(float(cc.get(c, 0.0)), 5) for c in cats],
            }  # fmt: skip
    return out


def _bars(ref: dict[str, float], live: dict[str, float], most: int = 40) -> dict[str, Any]:
    """Shares per category, the most frequent of either side first."""
    rn, ln = sum(ref.values()) or 1.0, sum(live.values()) or 1.0
    top = sorted(ref, key=ref.__getitem__, reverse=True)[:30] + sorted(live, key=live.__getitem__, reverse=True)[:30]
    cats = list(dict.fromkeys(top))[:most]
    return {
        "kind": "categorical", "categories": cats, "reference": [round(ref.get(c, 0.0) / rn, 5) for c in cats],
        "live": [round(live.get(c, 0.0) / ln, 5) for c in cats],
    }  # fmt: skip
