"""The panel's matplotlib figures as PNG bytes (Agg, no pyplot state): traffic and latency,
predictions against the reference, accuracy from feedback, calibration of logged probabilities.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from .data import PanelData
from .style import BLUE, GREEN, GREY, LIVE_COLOUR, ORANGE, RED, REFERENCE_COLOUR, fmt_ms, fmt_number, fmt_span

__all__ = ["accuracy_figure", "agreement_figure", "calibration_figure", "predictions_figure", "traffic_figure"]

FIG_DPI = 150  # rendered at 1.5x the display size: sharp on high-density screens
DISPLAY_DPI = 100
MIN_SPAN_S = 60  # time axes span at least a minute, so a young deployment's first seconds are not stretched
TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


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
    return pd.DatetimeIndex(frame.index).tz_convert(tz).tz_localize(None)


def _local(at: float) -> pd.Timestamp:
    return pd.Timestamp(datetime.fromtimestamp(at))


def _legend(ax: Any) -> None:
    """A legend on the title's line, right-aligned, so it never covers the data."""
    ax.legend(fontsize=8, frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=3, borderaxespad=0.1)


def _time_axis(ax: Any, left: pd.Timestamp, right: pd.Timestamp, max_ticks: int = 6) -> None:
    """Local clock times at round steps: HH:MM:SS under a minute's step, else HH:MM."""
    span = max((right - left).total_seconds(), 1.0)
    step = next((s for s in TICK_STEPS_S if span / s <= max_ticks), TICK_STEPS_S[-1])
    ticks = pd.date_range(left.ceil(f"{step}s"), right, freq=f"{step}s")
    fmt = "%H:%M:%S" if step < 60 else "%H:%M" if step < 86400 else "%d %b"
    ax.set_xticks(list(ticks.to_pydatetime()), [t.strftime(fmt) for t in ticks])
    ax.set_xlim(left, right)


# ---------------------------------------------------------------------------------------------- traffic


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
        _rate_axes(top, t, edges, data.bucket_s)
        _latency_axes(bottom, t, x + bucket / 2)
        right = max(_local(data.at), edges[-1])
        _time_axis(bottom, min(x[0], right - pd.Timedelta(seconds=MIN_SPAN_S)), right, max_ticks=int(width))
    return _png(fig)


def _rate_axes(ax: Any, t: pd.DataFrame, edges: pd.Index, bucket_s: float) -> None:
    """Requests/s as steps over each bucket, the answered share blue and the errors red."""
    rate = np.append(t["rate"].to_numpy(float), t["rate"].iloc[-1])
    share_ok = ((t["requests"] - t["errors"]) / t["requests"].where(t["requests"] > 0, 1)).to_numpy(float)
    ok_rate = rate * np.append(share_ok, share_ok[-1])
    ax.fill_between(edges, 0, ok_rate, color=BLUE, alpha=0.55, label="answered", step="post", linewidth=0)
    if (t["errors"] > 0).any():
        ax.fill_between(edges, ok_rate, rate, color=RED, alpha=0.75, label="errors", step="post", linewidth=0)
    ax.step(edges, rate, where="post", color=BLUE, linewidth=1)
    ax.set_ylim(0, max(float(t["rate"].max()), 0.1) * 1.15)
    ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.set_ylabel("requests/s", fontsize=9)
    ax.set_title(f"Traffic (requests/s per {fmt_span(bucket_s)})", fontsize=10, loc="left")
    _legend(ax)


def _latency_axes(ax: Any, t: pd.DataFrame, mid: pd.Index) -> None:
    """p50 and p95 at each bucket's middle; spikes above the axis drawn as markers at its top."""
    top_ms = _latency_top(t["p95_ms"].to_numpy(float))
    for col, colour in (("p50_ms", BLUE), ("p95_ms", ORANGE)):
        values = t[col].to_numpy(float)
        ax.plot(mid, np.minimum(values, top_ms), color=colour, linewidth=1.4, marker=".", markersize=4,
                label=col[:3])  # fmt: skip
        over = values > top_ms  # rare spikes (a cold start, a GC pause) are drawn at the top, not to scale
        if over.any():
            ax.plot(mid[over], np.full(over.sum(), top_ms), "^", color=colour, markersize=6, clip_on=False)
    if (t["p95_ms"].to_numpy(float) > top_ms).any():
        peak = fmt_ms(float(t["p95_ms"].max()))
        ax.text(1.0, 0.97, f"▲ off scale, up to {peak}", transform=ax.transAxes, ha="right", va="top",
                fontsize=8, color=GREY)  # fmt: skip
    ax.set_ylim(0, top_ms * 1.05)
    ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.set_ylabel("ms", fontsize=9)
    ax.set_title("Latency inside the service", fontsize=10, loc="left")
    _legend(ax)


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


# ---------------------------------------------------------------------------------------------- predictions


def predictions_figure(data: PanelData, width: float = 4.4, height: float = 3.8) -> bytes:
    """The live predictions' distribution against the reference's: bars for labels, histograms for numbers."""
    fig, (ax,) = _figure(width, height)
    ref, live = data.reference_predictions, data.live_predictions
    ax.set_title("Predictions: live vs deploy-time sample", fontsize=10, loc="left")
    if (ref is None or not len(ref)) and not len(live):
        _empty(ax, "no predictions yet")
    elif data.labels:
        _label_bars(ax, ref, live)
    else:
        _value_histograms(ax, ref, live)
    return _png(fig)


def _label_bars(ax: Any, ref: np.ndarray | None, live: np.ndarray) -> None:
    """Each class' share of the predictions, reference and live side by side (at most 20 classes)."""
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


def _value_histograms(ax: Any, ref: np.ndarray | None, live: np.ndarray) -> None:
    """Density histograms of predicted numbers on shared bins (the outer 0.5 % clipped to the edges)."""
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


def _n(a: Any) -> str:
    return f"{len(a):,}" if a is not None else "0"


def _label_key(c: str) -> tuple[int, float, str]:
    try:
        return (0, float(c), c)
    except ValueError:
        return (1, 0.0, c)


# ---------------------------------------------------------------------------------------------- accuracy


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
        overall = fmt_number(data.mae) if data.mae is not None else "–"
        ax.set_title(f"Mean absolute error from feedback: {overall} ({data.labelled:,} rows)", fontsize=10, loc="left")
    right = max(_local(data.at), x[-1] + step / 2)
    _time_axis(ax, min(x[0] - step / 2, right - pd.Timedelta(seconds=MIN_SPAN_S)), right, max_ticks=int(width))
    return _png(fig)


# ---------------------------------------------------------------------------------------------- calibration


def calibration_figure(data: PanelData, width: float = 3.2, height: float = 2.8) -> bytes | None:
    """Observed frequency against mean predicted probability per bin (the diagonal is perfect calibration),
    dots sized by rows; None until predict_proba answers have feedback."""
    c = data.calibration
    if c.empty:
        return None
    fig, (ax,) = _figure(width, height)
    ax.plot([0, 1], [0, 1], color=GREY, linewidth=0.8, linestyle="--")
    sizes = 12 + 60 * c["count"].to_numpy(float) / max(float(c["count"].max()), 1.0)
    ax.plot(c["mean_predicted"], c["observed"], color=BLUE, linewidth=1.2)
    ax.scatter(c["mean_predicted"], c["observed"], s=sizes, color=BLUE, zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_aspect("equal")
    what = f"class {data.positive_class}" if data.positive_class is not None else "top class"
    ax.set_xlabel(f"mean predicted ({what})", fontsize=9)
    ax.set_ylabel("observed frequency", fontsize=9)
    ax.set_title(f"Calibration ({data.scored:,} rows)", fontsize=10, loc="left")
    return _png(fig)


# ---------------------------------------------------------------------------------------------- champion / challenger


MAX_BUCKETS_BEHIND = 10  # the agreement chart runs up to now unless its data ends longer ago than this many buckets


def agreement_figure(
    over_time: pd.DataFrame,
    bucket_s: float,
    at: float,
    live: str = "live",
    candidate: str = "candidate",
    width: float = 6.0,
    height: float = 3.6,
) -> bytes:
    """A comparison's ``agreement_over_time``: agreement per time bucket (top; absent in split mode) and each
    version's p95 latency (bottom), as PNG."""
    fig, (top, bottom) = _figure(width, height, rows=2, sharex=True)
    top.set_title("Agreement with live (share of compared rows)", fontsize=10, loc="left")
    bottom.set_title("Latency p95", fontsize=10, loc="left")
    if over_time.empty:
        _empty(top, "no compared requests yet")
        _empty(bottom, "no requests yet")
        return _png(fig)
    step = pd.Timedelta(seconds=bucket_s)
    x = _local_index(over_time) + step / 2
    agreement = over_time["agreement"].to_numpy(float)
    if np.isnan(agreement).all():
        _empty(top, "split traffic: each version answers other requests, no agreement to show")
    else:
        top.plot(x, agreement, color=GREEN, marker="o", markersize=3, linewidth=1.4)
        low = float(np.nanmin(agreement))
        top.set_ylim(max(0.0, min(low, 0.9) - 0.02), 1.005)
        top.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if low < 0.9 else 1))
        top.yaxis.set_major_locator(MaxNLocator(4))
    for col, colour, label in (("live_p95_ms", BLUE, live), ("candidate_p95_ms", ORANGE, candidate)):
        values = over_time[col].to_numpy(float)
        if not np.isnan(values).all():
            bottom.plot(x, values, color=colour, marker=".", markersize=4, linewidth=1.4, label=label)
    bottom.set_ylim(bottom=0)
    bottom.yaxis.set_major_locator(MaxNLocator(4))
    bottom.set_ylabel("ms", fontsize=9)
    _legend(bottom)
    # up to now while the data is recent; an old comparison (``since`` far back) ends at its last bucket
    right = x[-1] + step / 2
    if _local(at) - right < pd.Timedelta(seconds=MAX_BUCKETS_BEHIND * bucket_s):
        right = max(right, _local(at))
    _time_axis(bottom, min(x[0] - step / 2, right - pd.Timedelta(seconds=MIN_SPAN_S)), right, max_ticks=int(width))
    return _png(fig)
