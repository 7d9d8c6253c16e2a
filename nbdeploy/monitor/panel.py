"""The monitoring panel of one deployment version: headline tiles, traffic and latency over time,
predictions against the reference, the drift table and accuracy from feedback.

``snapshot`` computes what the panel shows (no widgets, no drawing: tests call it directly);
``Panel`` draws a ``PanelData`` with ipywidgets and matplotlib (Agg, PNG into ``Image`` widgets,
so an executed notebook's saved widget state keeps the last picture) and refreshes it from a
background thread; ``StaticPanel`` renders one snapshot as self-contained HTML for papermill
outputs and the docs site.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from .. import config
from ..registry import RUNNING, Record, Registry
from . import metrics
from .drift import DriftThresholds, compute
from .store import RequestLog, accuracy_over_time, load_reference, logged_schema

__all__ = ["Panel", "PanelData", "StaticPanel", "open_panel", "snapshot"]

log = logging.getLogger(__name__)

ENDED = ("stopped", "failed")  # statuses after which a live panel stops refreshing
THROTTLE_ROWS = 200  # drift is recomputed on every refresh until it has this many live rows
BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_BUCKETS = 60

# Colours (GitHub's Primer palette: readable on white, distinguishable for the common colour blindnesses).
BLUE, ORANGE, RED, GREEN, GREY = "#0969da", "#bc4c00", "#cf222e", "#1a7f37", "#6e7781"
REFERENCE_COLOUR, LIVE_COLOUR = "#8c959f", BLUE
STATUS_STYLE = {  # drift table rows: background, text
    "drifted": ("#ffebe9", RED),
    "ok": ("#dafbe1", GREEN),
    "too few rows": ("#f6f8fa", GREY),
}
STATE_COLOUR = {"running": GREEN, "stopped": GREY, "failed": RED}


# ---------------------------------------------------------------------------------------------- data


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
    problems: list[str] = field(default_factory=list)  # what could not be read, in words
    drift_at: float = 0.0  # when the drift part (drift, predictions) was computed
    drift_basis: tuple[int, float] = field(default=(0, 0.0), repr=False)  # successful requests seen then
    scrape: metrics.Scrape | None = field(default=None, repr=False)  # for the next window


def _resolve(deployment: Any, registry: Registry) -> Record:
    """A fresh registry record for a Record, a Deployment handle or a name."""
    if isinstance(deployment, str):
        return registry.get(deployment)
    return registry.get(deployment.name, deployment.version)


def _status(rec: Record) -> str:
    if rec.status != RUNNING:
        return rec.status
    from ..targets import get_target

    return get_target(rec.target).status(rec)


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


def _overall(joined: pd.DataFrame) -> tuple[float | None, float | None]:
    """(accuracy, mae) over every labelled row, following store.accuracy_over_time's choice of metric."""
    if joined.empty:
        return None, None
    if pd.api.types.is_float_dtype(pd.Series(joined["y_true"]).infer_objects()):
        err = (pd.to_numeric(joined["y_pred"]) - pd.to_numeric(joined["y_true"])).abs()
        return None, float(err.mean())
    return float((joined["y_pred"].astype(str) == joined["y_true"].astype(str)).mean()), None


def _is_labels(values: np.ndarray) -> bool:
    s = pd.Series(values)
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    return not numeric or (pd.api.types.is_integer_dtype(s) and s.nunique() <= 20)


def snapshot(
    deployment: Any,
    previous: metrics.Scrape | None = None,
    *,
    window_s: float = 60.0,
    history_s: float = 900.0,
    max_rows: int = 5000,
    thresholds: DriftThresholds | None = None,
    registry: Registry | None = None,
    reuse: PanelData | None = None,
    drift_every_s: float = 0.0,
) -> PanelData:
    """What the panel shows now, for a ``Deployment``, a registry ``Record`` or a deployment name.

    With ``previous`` (an earlier ``PanelData.scrape``) the rate and error rate are the difference
    of BentoML's ``/metrics`` counters between the two scrapes; without it they come from the
    request log's last ``window_s`` seconds. Latency percentiles always come from the request log
    (exact; the time inside the service). The total request count is the service's counter (the
    log's count when ``/metrics`` cannot be read). Parts that cannot be read are listed in
    ``problems`` instead of raising.

    Drift and the prediction distribution (the costly part: it parses the logged inputs) are taken
    from ``reuse``, an earlier snapshot of the same version, when no successful request arrived
    since it or it is younger than ``drift_every_s``.
    """
    rec = _resolve(deployment, registry or Registry())
    now = time.time()
    data = PanelData(rec.name, rec.version, _status(rec), rec.url, now)
    directory = config.deployment_dir(rec.name, rec.version)
    reqlog = RequestLog(directory)

    if data.status not in ENDED and rec.url:
        try:
            data.scrape = metrics.scrape(rec.url, timeout=3.0)
        except Exception as exc:  # the service may be starting, stopping or busy: say so, keep the rest
            data.problems.append(f"could not read {rec.url}/metrics: {type(exc).__name__}: {exc}")
    cur = data.scrape
    if cur is not None:
        data.total_requests, data.errors = int(cur.total), int(cur.errors)
        data.dropped_records = int(cur.dropped_records)

    frame = reqlog.requests(since=now - history_s)
    data.logged_requests = len(frame)
    data.traffic, data.bucket_s = _traffic(frame, now)
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
    if data.total_requests is None:
        everything = reqlog.requests()
        data.total_requests, data.total_from = len(everything), "log"
        data.errors = int((everything["status"] != 200).sum())

    answered = frame[frame["status"] == 200]
    data.drift_basis = (len(answered), float(answered["ts"].max()) if len(answered) else 0.0)
    same = reuse is not None and (reuse.name, reuse.version) == (rec.name, rec.version)
    busy = same and len(reuse.live_predictions) >= THROTTLE_ROWS  # below that, parsing the rows is cheap
    if same and (reuse.drift_basis == data.drift_basis or (busy and now - reuse.drift_at < drift_every_s)):
        _copy_drift(reuse, data)
    else:
        try:
            _drift_part(data, rec, reqlog, max_rows, thresholds)
        except Exception as exc:  # keep the rest of the panel
            log.debug("drift failed", exc_info=True)
            data.problems.append(f"drift could not be computed: {type(exc).__name__}: {exc}")

    try:
        joined = reqlog.feedback()
        data.labelled = len(joined)
        data.accuracy, data.mae = _overall(joined)
        data.accuracy_bucket_s = _accuracy_bucket(joined)
        data.accuracy_over_time = accuracy_over_time(joined, f"{data.accuracy_bucket_s}s")
    except Exception as exc:
        log.debug("accuracy failed", exc_info=True)
        data.problems.append(f"accuracy could not be computed: {type(exc).__name__}: {exc}")
    return data


DRIFT_FIELDS = ("drift", "drifted", "reference_predictions", "live_predictions", "labels", "drift_at", "drift_basis")


def _copy_drift(source: PanelData, data: PanelData) -> None:
    for name in DRIFT_FIELDS:
        setattr(data, name, getattr(source, name))
    data.problems += [p for p in source.problems if "reference" in p]


def _drift_part(
    data: PanelData, rec: Record, reqlog: RequestLog, max_rows: int, thresholds: DriftThresholds | None
) -> None:
    data.drift_at = data.at
    ref = load_reference(reqlog.directory)
    schema = logged_schema(rec.info) if rec.info.get("schema") else {}
    current, preds = reqlog.recent_rows(schema, max_rows) if schema else (pd.DataFrame(), np.array([]))
    data.live_predictions = np.asarray(preds)
    if ref is None:
        data.problems.append("no reference sample kept for this version: no drift (redeploy to get one)")
    else:
        ref_inputs, ref_preds = ref
        data.reference_predictions = np.asarray(ref_preds)
        data.labels = _is_labels(data.reference_predictions)
        live = current if not current.empty else ref_inputs.iloc[0:0]
        data.drift = compute(ref_inputs, live, ref_preds, preds if len(preds) else np.asarray([]), thresholds)
        data.drifted = [str(f) for f in data.drift.index[data.drift["drifted"]] if f != "prediction"]
    if ref is None and len(preds):
        data.labels = _is_labels(data.live_predictions)


def _accuracy_bucket(joined: pd.DataFrame) -> int:
    """Seconds per accuracy point: at least 10, and up to ~30 points over the labelled span."""
    span = float(joined["ts"].max() - joined["ts"].min()) if len(joined) else 0.0
    return next((b for b in BUCKETS_S if b >= 10 and span / b <= 30), BUCKETS_S[-1])


# ---------------------------------------------------------------------------------------------- text


def _fmt_count(n: float | None) -> str:
    return "–" if n is None else f"{int(n):,}"


def _fmt_rate(r: float | None) -> str:
    if r is None:
        return "–"
    if r == 0:
        return "0"
    return f"{r:,.0f}" if r >= 100 else f"{r:.1f}" if r >= 1 else f"{r:.2f}"


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def _fmt_pct(x: float | None) -> str:
    if x is None:
        return "–"
    return "0 %" if x == 0 else f"{x * 100:.2f} %" if x < 0.01 else f"{x * 100:.1f} %"


def _fmt_span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().strftime("%H:%M:%S")


def _tile(label: str, value: str, sub: str = "", colour: str = "#1f2328") -> str:
    return (
        "<div style='border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;background:#fff;"
        "min-width:128px;line-height:1.25'>"
        f"<div style='font-size:12px;color:#59636e'>{html.escape(label)}</div>"
        f"<div style='font-size:22px;font-weight:600;color:{colour};font-variant-numeric:tabular-nums'>"
        f"{html.escape(value)}</div>"
        f"<div style='font-size:11px;color:#59636e;min-height:14px'>{html.escape(sub)}</div></div>"
    )


TILES = ("requests", "rate", "p50", "p95", "errors", "drift")


def tiles(data: PanelData) -> dict[str, str]:
    """The headline tiles as HTML, by key (see ``TILES``)."""
    over = f"last {_fmt_span(data.window_s)}" if data.window_s else ""
    err_colour = RED if (data.error_rate or 0) >= 0.05 else ORANGE if data.error_rate else "#1f2328"
    n_features = max(len(data.drift) - ("prediction" in data.drift.index), 0)
    drift_value = "–" if data.drift.empty else f"{len(data.drifted)} of {n_features}"
    drift_sub = ", ".join(data.drifted[:3]) + (" …" if len(data.drifted) > 3 else "") if data.drifted else ""
    if not data.drift.empty and not data.drifted:
        judged = (data.drift["test"] != "too few rows").any()
        drift_sub = "none drifted" if judged else "waiting for traffic"
    errors_sub = f"{_fmt_count(data.errors)} failed in all" if data.errors else over
    total_sub = "since the service started" if data.total_from == "metrics" else "in the request log"
    return {
        "requests": _tile("Requests", _fmt_count(data.total_requests), total_sub),
        "rate": _tile("Requests/s", _fmt_rate(data.rate), over),
        "p50": _tile("Latency p50", _fmt_ms(data.p50_ms), over),
        "p95": _tile("Latency p95", _fmt_ms(data.p95_ms), over),
        "errors": _tile("Error rate", _fmt_pct(data.error_rate), errors_sub, err_colour),
        "drift": _tile("Drifted features", drift_value, drift_sub, RED if data.drifted else "#1f2328"),
    }


def header(data: PanelData) -> str:
    colour = STATE_COLOUR.get(data.status, ORANGE)
    url = f" &middot; <code>{html.escape(data.url)}</code>" if data.url else ""
    return (
        f"<div style='font-size:15px'><b>{html.escape(data.name)}</b> &middot; version {data.version} &middot; "
        f"<b style='color:{colour}'>{html.escape(data.status)}</b>{url}</div>"
    )


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and (abs(x) >= 1000 or (x != 0 and abs(x) < 10**-digits)):
        return f"{x:.2e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def drift_table(data: PanelData) -> str:
    """The drift table as HTML, each row coloured by its status (drifted, ok, too few rows)."""
    if data.drift.empty:
        why = next((p for p in data.problems if "reference" in p), "no drift table yet")
        return f"<div style='color:{GREY};font-size:12px;padding:8px 0'>{html.escape(why)}</div>"
    head = ["feature", "status", "test", "statistic", "p-value", "PSI", "live rows"]
    th = "".join(
        f"<th style='text-align:{'left' if i < 3 else 'right'};padding:3px 8px;border-bottom:1px solid #d0d7de'>"
        f"{h}</th>"
        for i, h in enumerate(head)
    )
    rows = []
    for feature, r in data.drift.iterrows():
        status = "too few rows" if r["test"] == "too few rows" else "drifted" if r["drifted"] else "ok"
        bg, fg = STATUS_STYLE[status]
        test = "" if status == "too few rows" else str(r["test"])
        cells = [str(feature), status, test, _f(r["statistic"]), _f(r["p_value"]), _f(r["psi"]), f"{r['n_current']:,}"]
        tds = "".join(
            f"<td style='text-align:{'left' if i < 3 else 'right'};padding:2px 8px;"
            f"{f'color:{fg};font-weight:600' if i == 1 else ''}'>{html.escape(c)}</td>"
            for i, c in enumerate(cells)
        )
        rows.append(f"<tr style='background:{bg}'>{tds}</tr>")
    return (
        "<div style='font-size:13px;font-weight:600;margin-bottom:4px'>Drift against the deploy-time sample</div>"
        "<table style='border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums'>"
        f"<thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# ---------------------------------------------------------------------------------------------- figures

FIG_DPI = 150  # rendered at 1.5x the display size: sharp on high-density screens
DISPLAY_DPI = 100


def _figure(width: float, height: float, rows: int = 1, sharex: bool = False) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=DISPLAY_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=9)
        ax.grid(axis="y", color="#eaeef2", linewidth=0.8)
        ax.set_axisbelow(True)
    return fig, axes


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI, facecolor="white")
    return buf.getvalue()


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=GREY, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[["left", "bottom"]].set_color("#d0d7de")


def _local_index(frame: pd.DataFrame) -> pd.DatetimeIndex:
    tz = datetime.now().astimezone().tzinfo
    return frame.index.tz_convert(tz).tz_localize(None)


def traffic_figure(data: PanelData, width: float = 6.0, height: float = 3.8) -> bytes:
    """Requests/s (errors in red) and latency p50/p95 per time bucket, as PNG."""
    fig, (top, bottom) = _figure(width, height, rows=2, sharex=True)
    t = data.traffic
    top.set_title("Traffic (requests/s)", fontsize=10, loc="left")
    bottom.set_title("Latency inside the service", fontsize=10, loc="left")
    if t.empty:
        _empty(top, "no requests logged yet")
        _empty(bottom, "no requests logged yet")
    else:
        bucket = pd.Timedelta(seconds=data.bucket_s)
        x = _local_index(t)
        edges = x.append(pd.DatetimeIndex([x[-1] + bucket]))  # each step spans its whole bucket
        rate = np.append(t["rate"].to_numpy(float), t["rate"].iloc[-1])
        share_ok = ((t["requests"] - t["errors"]) / t["requests"].where(t["requests"] > 0, 1)).to_numpy(float)
        ok_rate = rate * np.append(share_ok, share_ok[-1])
        top.fill_between(edges, 0, ok_rate, color=BLUE, alpha=0.55, label="answered", step="post", linewidth=0)
        if (t["errors"] > 0).any():
            top.fill_between(edges, ok_rate, rate, color=RED, alpha=0.75, label="errors", step="post", linewidth=0)
        top.step(edges, rate, where="post", color=BLUE, linewidth=1)
        top.set_ylim(0, max(float(t["rate"].max()), 0.1) * 1.15)
        top.yaxis.set_major_locator(MaxNLocator(4))
        top.set_ylabel("requests/s", fontsize=9)
        top.set_title(f"Traffic (requests/s per {_fmt_span(data.bucket_s)})", fontsize=10, loc="left")
        _legend(top)
        mid = x + bucket / 2
        top_ms = _latency_top(t["p95_ms"].to_numpy(float))
        for col, colour in (("p50_ms", BLUE), ("p95_ms", ORANGE)):
            values = t[col].to_numpy(float)
            bottom.plot(mid, np.minimum(values, top_ms), color=colour, linewidth=1.4, marker=".", markersize=4,
                        label=col[:3])  # fmt: skip
            over = values > top_ms  # rare spikes (a cold start, a GC pause) are drawn at the top, not to scale
            if over.any():
                bottom.plot(mid[over], np.full(over.sum(), top_ms), "^", color=colour, markersize=6, clip_on=False)
        if (t["p95_ms"].to_numpy(float) > top_ms).any():
            peak = _fmt_ms(float(t["p95_ms"].max()))
            bottom.text(1.0, 0.97, f"▲ off scale, up to {peak}", transform=bottom.transAxes, ha="right", va="top",
                        fontsize=8, color=GREY)  # fmt: skip
        bottom.set_ylim(0, top_ms * 1.05)
        bottom.yaxis.set_major_locator(MaxNLocator(4))
        bottom.set_ylabel("ms", fontsize=9)
        bottom.set_title("Latency inside the service", fontsize=10, loc="left")
        _legend(bottom)
        right = max(_local(data.at), edges[-1])
        _time_axis(bottom, min(x[0], right - pd.Timedelta(seconds=MIN_SPAN_S)), right, max_ticks=int(width))
    return _png(fig)


def _legend(ax: Any) -> None:
    """A legend on the title's line, right-aligned, so it never covers the data."""
    ax.legend(fontsize=8, frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=3, borderaxespad=0.1)


MIN_SPAN_S = 60  # time axes span at least a minute, so a young deployment's first seconds are not stretched
TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _local(at: float) -> pd.Timestamp:
    return pd.Timestamp(datetime.fromtimestamp(at))


def _latency_top(p95: np.ndarray) -> float:
    """The latency axis' top: the highest p95, unless a few spikes would flatten everything else."""
    p95 = p95[~np.isnan(p95)]
    if not len(p95):
        return 1.0
    top = float(p95.max())
    if len(p95) >= 8:
        typical = float(np.quantile(p95, 0.9)) * 1.5
        if top > 2 * typical:
            top = typical
    return max(top * 1.1, 0.1)


def _time_axis(ax: Any, left: pd.Timestamp, right: pd.Timestamp, max_ticks: int = 6) -> None:
    """Local clock times at round steps: HH:MM:SS under a minute's step, else HH:MM."""
    span = max((right - left).total_seconds(), 1.0)
    step = next((s for s in TICK_STEPS_S if span / s <= max_ticks), TICK_STEPS_S[-1])
    ticks = pd.date_range(left.ceil(f"{step}s"), right, freq=f"{step}s")
    fmt = "%H:%M:%S" if step < 60 else "%H:%M" if step < 86400 else "%d %b"
    ax.set_xticks(list(ticks.to_pydatetime()), [t.strftime(fmt) for t in ticks])
    ax.set_xlim(left, right)


def predictions_figure(data: PanelData, width: float = 4.4, height: float = 3.8) -> bytes:
    """The live predictions' distribution against the reference's: bars for labels, histograms for numbers."""
    fig, (ax,) = _figure(width, height)
    ref, live = data.reference_predictions, data.live_predictions
    ax.set_title("Predictions: live vs deploy-time sample", fontsize=10, loc="left")
    if (ref is None or not len(ref)) and not len(live):
        _empty(ax, "no predictions yet")
    elif data.labels:
        r = pd.Series(ref if ref is not None else [], dtype=object).astype(str).value_counts(normalize=True)
        v = pd.Series(live, dtype=object).astype(str).value_counts(normalize=True)
        cats = sorted(set(r.index) | set(v.index), key=_label_key)[:20]
        pos = np.arange(len(cats))
        w = 0.4
        ax.bar(pos - w / 2, [r.get(c, 0) for c in cats], w, color=REFERENCE_COLOUR, label=f"reference (n={_n(ref)})")
        ax.bar(pos + w / 2, [v.get(c, 0) for c in cats], w, color=LIVE_COLOUR, label=f"live (n={len(live):,})")
        ax.set_xticks(pos, cats, fontsize=9, rotation=0 if len(cats) <= 8 else 45)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_ylim(0, 1.0 if max(r.max() if len(r) else 0, v.max() if len(v) else 0) > 0.85 else None)
        ax.set_ylabel("share of predictions", fontsize=9)
        ax.set_xlabel("predicted class", fontsize=9)
        ax.legend(fontsize=8, frameon=False)
    else:
        values = [np.asarray(a, float) for a in (ref, live) if a is not None and len(a)]
        both = np.concatenate(values)
        lo, hi = np.nanquantile(both, [0.005, 0.995]) if len(both) else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        if ref is not None and len(ref):
            ax.hist(np.clip(ref, lo, hi), bins, density=True, color=REFERENCE_COLOUR, alpha=0.7,
                    label=f"reference (n={_n(ref)})")  # fmt: skip
        if len(live):
            ax.hist(np.clip(np.asarray(live, float), lo, hi), bins, density=True, histtype="step", linewidth=1.6,
                    color=LIVE_COLOUR, label=f"live (n={len(live):,})")  # fmt: skip
        ax.set_ylabel("density", fontsize=9)
        ax.set_xlabel("predicted value", fontsize=9)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.2g}"))
        ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def _n(a: Any) -> str:
    return f"{len(a):,}" if a is not None else "0"


def _label_key(c: str) -> tuple[int, float, str]:
    try:
        return (0, float(c), c)
    except ValueError:
        return (1, 0.0, c)


def accuracy_figure(data: PanelData, width: float = 4.4, height: float = 2.8) -> bytes | None:
    """Accuracy (or mean absolute error) per time bucket from feedback; None when there is no feedback."""
    a = data.accuracy_over_time
    if a.empty:
        return None
    fig, (ax,) = _figure(width, height)
    step = pd.Timedelta(seconds=data.accuracy_bucket_s)
    x = _local_index(a) + step / 2
    metric = str(a["metric"].iloc[0])
    if metric == "accuracy":
        ax.plot(x, a["value"], color=GREEN, marker="o", markersize=4, linewidth=1.5)
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        overall = f"{data.accuracy * 100:.1f} %" if data.accuracy is not None else "–"
        ax.set_title(f"Accuracy from feedback: {overall} of {data.labelled:,} rows", fontsize=10, loc="left")
    else:
        ax.plot(x, a["value"], color=ORANGE, marker="o", markersize=4, linewidth=1.5)
        ax.set_ylim(bottom=0)
        overall = _f(data.mae) if data.mae is not None else "–"
        ax.set_title(f"Mean absolute error from feedback: {overall} ({data.labelled:,} rows)", fontsize=10, loc="left")
    right = max(_local(data.at), x[-1] + step / 2)
    _time_axis(ax, min(x[0] - step / 2, right - pd.Timedelta(seconds=MIN_SPAN_S)), right, max_ticks=int(width * 0.9))
    return _png(fig)


NO_FEEDBACK = (
    "<div style='color:#59636e;font-size:12px;padding:8px 0'>No feedback yet: accuracy over time appears once "
    "ground truth arrives, e.g. <code>dep.feedback(dep.last_request_id, y_true)</code>.</div>"
)


# ---------------------------------------------------------------------------------------------- static HTML


def _notes(data: PanelData) -> list[str]:
    """Problems to list under the panel (a missing reference is said in the drift table's place already)."""
    return [p for p in data.problems if not (data.drift.empty and "reference" in p)]


def _img(png: bytes, width_px: int) -> str:
    data = base64.b64encode(png).decode()
    return f"<img src='data:image/png;base64,{data}' style='width:{width_px}px;max-width:100%'/>"


def static_html(data: PanelData) -> str:
    """One snapshot as self-contained HTML (tiles, PNGs as data URIs, drift table): for saved notebooks."""
    t = tiles(data)
    acc = accuracy_figure(data)
    problems = "".join(f"<div style='color:{ORANGE};font-size:12px'>{html.escape(p)}</div>" for p in _notes(data))
    return (
        "<div class='nbdeploy-panel' style='font-family:system-ui,sans-serif;max-width:1080px'>"
        f"{header(data)}"
        f"<div style='display:flex;gap:8px;flex-wrap:wrap;margin:6px 0'>{''.join(t[k] for k in TILES)}</div>"
        "<div style='display:flex;gap:8px;flex-wrap:wrap'>"
        f"{_img(traffic_figure(data), 600)}{_img(predictions_figure(data), 440)}</div>"
        "<div style='display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start;margin-top:6px'>"
        f"<div>{drift_table(data)}</div><div>{_img(acc, 440) if acc else NO_FEEDBACK}</div></div>"
        f"{problems}<div style='color:#59636e;font-size:11px;margin-top:4px'>snapshot taken at {_clock(data.at)}"
        " &middot; live view: <code>dep.monitor()</code></div></div>"
    )


class StaticPanel:
    """A snapshot of the panel that renders as plain HTML (``dep.monitor(live=False)``)."""

    def __init__(self, data: PanelData) -> None:
        self.data = data

    def _repr_html_(self) -> str:
        return static_html(self.data)

    def __repr__(self) -> str:
        d = self.data
        return f"<StaticPanel {d.name} v{d.version}: {d.total_requests} requests, drifted {d.drifted}>"


# ---------------------------------------------------------------------------------------------- live widget

_live: dict[tuple[str, int], weakref.ref[Panel]] = {}
_live_lock = threading.Lock()


class Panel:
    """The live panel: ipywidgets refreshed every ``interval`` seconds from a background thread.

    It stops refreshing when closed (its Close button, ``close()``), on ``stop()``, or when the
    deployment stops; the last picture stays in the widgets (and in a saved notebook's widget
    state). ``data`` is the latest ``PanelData``; ``tiles`` the headline tiles' HTML widgets by key
    (``TILES``), each with the CSS class ``nbdeploy-tile-KEY``. Errors never reach the kernel: they show in the
    status line at the bottom. Rates and latencies cover the last ``window_s`` seconds; drift is
    recomputed at most every ``drift_every_s`` seconds, from the latest ``max_rows`` logged rows.
    """

    def __init__(
        self,
        deployment: Any,
        interval: float = 3.0,
        *,
        window_s: float = 30.0,
        drift_every_s: float = 15.0,
        max_rows: int = 2000,
        start: bool = True,
    ) -> None:
        import ipywidgets as w

        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        self._registry = Registry()
        rec = _resolve(deployment, self._registry)
        self.name, self.version = rec.name, rec.version
        self.interval = float(interval)
        self.window_s = window_s
        self.drift_every_s = drift_every_s
        self.max_rows = max_rows
        self.data: PanelData | None = None
        self.error: str | None = None  # the last refresh's error, if it failed
        self._scrapes: deque[metrics.Scrape] = deque()
        self._drawn: dict[str, Any] = {}  # figure -> what it was drawn from (skip redrawing the same)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one refresh at a time
        self._thread: threading.Thread | None = None

        self._header = w.HTML()
        self.tiles = {k: w.HTML().add_class(f"nbdeploy-tile-{k}") for k in TILES}
        self._close_button = w.Button(description="Close", tooltip="Stop the updates and remove the panel")
        self._close_button.layout = w.Layout(width="80px")
        self._close_button.on_click(lambda _: self.close())
        self._traffic = w.Image(format="png", layout=w.Layout(width="600px"))
        self._predictions = w.Image(format="png", layout=w.Layout(width="440px"))
        self._drift = w.HTML()
        self._accuracy = w.Image(format="png", layout=w.Layout(width="440px", display="none"))
        self._no_feedback = w.HTML(NO_FEEDBACK)
        self._status = w.HTML().add_class("nbdeploy-status")
        row = {"grid_gap": "8px", "flex_flow": "row wrap"}
        self.widget = w.VBox(
            [
                w.HBox(
                    [self._header, self._close_button],
                    layout=w.Layout(justify_content="space-between", align_items="center", max_width="1050px"),
                ),
                w.HBox(list(self.tiles.values()), layout=w.Layout(**row)),
                w.HBox([self._traffic, self._predictions], layout=w.Layout(**row)),
                w.HBox(
                    [self._drift, w.VBox([self._accuracy, self._no_feedback])],
                    layout=w.Layout(**{**row, "grid_gap": "16px"}, align_items="flex-start"),
                ),
                self._status,
            ],
            layout=w.Layout(padding="4px"),
        ).add_class("nbdeploy-panel")

        self.refresh()
        if start and self.data is not None and self.data.status not in ENDED:
            self._claim()
            self._thread = threading.Thread(target=self._run, name=f"nbdeploy-panel-{self.name}", daemon=True)
            self._thread.start()
        else:
            self._stop.set()
            self._set_status(f"not live: deployment {self.data.status}" if self.data else "not live", keep=True)

    # -- lifecycle
    @property
    def live(self) -> bool:
        """True while the background thread refreshes the panel."""
        return self._thread is not None and self._thread.is_alive()

    def _claim(self) -> None:
        """One live panel per deployment version: a new one (say, a re-run cell) stops the previous one."""
        with _live_lock:
            old = _live.get((self.name, self.version))
            _live[(self.name, self.version)] = weakref.ref(self)
        previous = old() if old is not None else None
        if previous is not None and previous is not self:
            previous.stop("handed over to a newer panel of this deployment")

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.refresh()
                if self.data is not None and self.data.status in ENDED:
                    self._stop.set()
                    self._set_status(f"deployment {self.data.status}: updates ended ({self._when()})", keep=True)
        except BaseException as exc:  # refresh() catches everything; this is the last line of defence
            log.debug("nbdeploy monitor panel thread failed", exc_info=True)
            self._set_status(f"updates ended: {html.escape(f'{type(exc).__name__}: {exc}')}", error=True)

    def stop(self, reason: str = "stopped") -> None:
        """Stop refreshing; the panel keeps its last picture."""
        was_live = not self._stop.is_set()
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval + 60)
        if was_live:
            self._set_status(f"updates {reason} (last data {self._when()})", keep=True)

    def close(self) -> None:
        """Stop refreshing and remove the panel from the notebook."""
        self.stop("closed")
        _close_tree(self.widget)

    # -- refresh
    def _previous(self, now: float) -> metrics.Scrape | None:
        """The oldest kept scrape within the window, so the rates cover up to ``window_s``."""
        while len(self._scrapes) > 1 and now - self._scrapes[1].at >= self.window_s:
            self._scrapes.popleft()
        return self._scrapes[0] if self._scrapes else None

    def refresh(self) -> PanelData | None:
        """Take a snapshot and draw it; on failure keep the last picture and say why. Never raises."""
        with self._lock:
            try:
                data = snapshot(
                    _Key(self.name, self.version),
                    self._previous(time.time()),
                    window_s=self.window_s,
                    max_rows=self.max_rows,
                    registry=self._registry,
                    reuse=self.data,
                    drift_every_s=self.drift_every_s,
                )
                if data.scrape is not None:
                    if self._scrapes and data.scrape.total < self._scrapes[-1].total:
                        self._scrapes.clear()  # the service restarted: its counters began again
                    self._scrapes.append(data.scrape)
                self._draw(data)
                self.data, self.error = data, None
                every = "" if self._stop.is_set() else f" &middot; refreshed every {self.interval:g} s"
                notes = "".join(f" &middot; {html.escape(p)}" for p in _notes(data))
                self._set_status(f"updated {self._when()}{every}{notes}")
            except Exception as exc:
                log.debug("nbdeploy monitor panel refresh failed", exc_info=True)
                self.error = f"{type(exc).__name__}: {exc}"
                self._set_status(f"refresh failed at {_clock(time.time())}: {html.escape(self.error)}", error=True)
            return self.data

    def _when(self) -> str:
        return _clock(self.data.at) if self.data else "–"

    def _draw(self, data: PanelData) -> None:
        self._header.value = header(data)
        for key, value in tiles(data).items():
            if self.tiles[key].value != value:
                self.tiles[key].value = value
        last = data.traffic.index[-1] if len(data.traffic) else None
        self._update("traffic", (data.logged_requests, data.bucket_s, last), self._traffic, traffic_figure, data)
        self._update("predictions", data.drift_at, self._predictions, predictions_figure, data)
        self._drift.value = drift_table(data)
        if not data.accuracy_over_time.empty:
            basis = (data.labelled, len(data.accuracy_over_time))
            self._update("accuracy", basis, self._accuracy, accuracy_figure, data)
            self._accuracy.layout.display = None
            self._no_feedback.layout.display = "none"

    def _update(self, key: str, basis: Any, image: Any, draw: Any, data: PanelData) -> None:
        """Redraw one figure only when what it shows changed (drawing is the costly part of a refresh)."""
        if self._drawn.get(key) != basis:
            image.value = draw(data)
            self._drawn[key] = basis

    def _set_status(self, text: str, error: bool = False, keep: bool = False) -> None:
        if keep or error or not self._stop.is_set() or self.data is None:
            colour = RED if error else "#59636e"
            self._status.value = f"<div style='font-size:11px;color:{colour}'>{text}</div>"

    # -- display
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        state = "live" if self.live else "stopped"
        return f"<Panel {self.name} v{self.version} ({state}, every {self.interval:g} s)>"


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


@dataclass(frozen=True)
class _Key:
    name: str
    version: int


def open_panel(deployment: Any, interval: float = 3.0, live: bool = True) -> Panel | StaticPanel:
    """The panel for ``deployment``: live widgets, or a static HTML snapshot with ``live=False``."""
    if live:
        return Panel(deployment, interval)
    return StaticPanel(snapshot(deployment))
