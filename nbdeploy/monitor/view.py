"""The panel's interactive part: the JSON the browser draws (``view_model``) and the widget that carries it.

The kernel only aggregates (per time bucket, per bin) and sends a few kilobytes; the browser draws SVG with
``assets/panel.js`` (no library, no CDN) and keeps the interaction (time range, zoom, hover, search, sort, the
selected feature) to itself. The same script draws the standalone report (``monitor.report``).
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from .cache import LogCache
from .data import PanelData
from .style import fmt_span

__all__ = ["RANGES", "ChartsView", "drift_json", "drift_view", "script", "view_model", "wilson"]

#: view_model's keys that change only when drift is judged again
DRIFT_KEYS = (
    "drift_at", "window", "rule", "dataset_drift", "drifted", "features", "dist", "history", "no_drift", "attribution",
)  # fmt: skip

#: time range -> (seconds, or 0 for all; bucket seconds, or 0 to choose)
RANGES = {"5m": (300, 5), "1h": (3600, 60), "24h": (86400, 1800), "all": (0, 0)}
BUCKETS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 86400)


@cache
def script() -> str:
    """The panel's JavaScript (an ES module whose default export is the anywidget entry)."""
    return resources.files(__package__).joinpath("assets/panel.js").read_text(encoding="utf-8")


def wilson(hits: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of a proportion (95 % by default): sound for small counts and near 0 or 1."""
    n = np.asarray(n, float)
    p = np.divide(hits, n, out=np.zeros_like(n), where=n > 0)
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else round(f, 6)


def _series(meta: pd.DataFrame, now: float, span_s: int, bucket_s: int) -> dict[str, Any]:
    """Per bucket over the last ``span_s`` (0: all): requests/s, errors/s, p50 and p95 latency, counts."""
    ts = meta["ts"].to_numpy(float)
    if span_s:
        keep = ts >= now - span_s
        ts = ts[keep]
        lat, status = meta["latency_ms"].to_numpy(float)[keep], meta["status"].to_numpy()[keep]
    else:
        lat, status = meta["latency_ms"].to_numpy(float), meta["status"].to_numpy()
    if not bucket_s:
        span = now - (float(ts.min()) if len(ts) else now - 60)
        bucket_s = next((b for b in BUCKETS if span / b <= 90), BUCKETS[-1])
    out: dict[str, Any] = {"bucket": bucket_s, "t": [], "rate": [], "errors": [], "p50": [], "p95": [], "n": []}
    if not len(ts):
        return out
    first = float(ts.min()) // bucket_s * bucket_s
    idx = ((ts - first) // bucket_s).astype(int)
    nb = int((now - first) // bucket_s) + 1
    counts = np.bincount(idx, minlength=nb)[:nb]
    errs = np.bincount(idx, weights=(status != 200).astype(float), minlength=nb)[:nb]
    seconds = np.clip(now - (first + np.arange(nb) * bucket_s), 1.0, bucket_s)  # the last bucket is still filling
    p50: list[float | None] = [None] * nb
    p95: list[float | None] = [None] * nb
    ok = status == 200
    order = np.lexsort((lat[ok], idx[ok]))  # by bucket, then latency: percentiles by index, no per-bucket sort
    sidx, slat = idx[ok][order], lat[ok][order]
    bounds = np.searchsorted(sidx, np.arange(nb + 1))
    for b in np.flatnonzero(np.diff(bounds)):
        lo, size = bounds[b], bounds[b + 1] - bounds[b]
        p50[b], p95[b] = _num(slat[lo + int(0.5 * (size - 1))]), _num(slat[lo + int(0.95 * (size - 1))])
    out.update(
        t=[first + (i + 0.5) * bucket_s for i in range(nb)],
        rate=[round(float(v), 4) for v in counts / seconds],
        errors=[round(float(v), 4) for v in errs / seconds],
        p50=p50,
        p95=p95,
        n=[int(c) for c in counts],
    )
    return out


def _accuracy(data: PanelData) -> dict[str, Any] | None:
    acc = data.accuracy_over_time
    if acc.empty:
        return None
    metric = str(acc["metric"].iloc[0])
    t = [ts.timestamp() + data.accuracy_bucket_s / 2 for ts in pd.DatetimeIndex(acc.index)]
    n = acc["n"].to_numpy(float)
    value = acc["value"].to_numpy(float)
    out: dict[str, Any] = {"metric": metric, "bucket": data.accuracy_bucket_s, "t": t, "n": [int(v) for v in n],
                           "value": [_num(v) for v in value]}  # fmt: skip
    if metric == "accuracy":
        lo, hi = wilson(np.round(value * n), n)
        out.update(lo=[_num(v) for v in lo], hi=[_num(v) for v in hi])
    return out


def _features(drift: pd.DataFrame, moves: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    table = drift.drop(index="prediction", errors="ignore")
    for name, r in zip(table.index, table.to_dict("records"), strict=True):
        rows.append(
            {
                "name": str(name), "kind": r["kind"], "test": r["test"], "drifted": bool(r["drifted"]),
                "effect": _num(r["effect"]), "threshold": _num(r["threshold"]), "p": _num(r["p_value"]),
                "q": _num(r["q_value"]), "psi": _num(r["psi"]), "n": int(r["n_current"]),
                "moves": _num(moves.get(str(name))),
            }
        )  # fmt: skip
    return rows


def _attribution(data: PanelData) -> dict[str, Any] | None:
    """What the attribution's figures are of (``features[i]["moves"]`` has each feature's)."""
    a = data.attribution
    if a is None:
        return None
    return {"target": a.target, "reference": _num(a.reference), "live": _num(a.live), "observed": _num(a.observed)}


def _calibration(data: PanelData) -> dict[str, Any] | None:
    """The reliability diagram's points: per probability bin its bounds, mean predicted, observed frequency, rows."""
    c = data.calibration
    if c.empty:
        return None
    cols = {"lower": "bin_lower", "upper": "bin_upper", "predicted": "mean_predicted", "observed": "observed"}
    out: dict[str, Any] = {k: [_num(v) for v in c[col]] for k, col in cols.items()}
    out.update(
        n=[int(v) for v in c["count"]],
        of=f"class {data.positive_class}" if data.positive_class is not None else "the top class",
        rows=data.scored,
    )
    return out


def _history(cache: LogCache | None, names: list[str]) -> dict[str, Any]:
    if cache is None or not cache.history:
        return {"t": [], "effect": {}}
    hist = list(cache.history)
    return {"t": [j.at for j in hist], "effect": {n: [j.effect.get(n) for j in hist] for n in names}}


def view_model(
    data: PanelData, cache: LogCache | None = None, meta: pd.DataFrame | None = None, drift: bool = True
) -> dict[str, Any]:
    """What the browser draws, as JSON-ready values: traffic per time range, accuracy with its Wilson band, the
    calibration of logged probabilities, the drift table with how much each shift alone moves the predictions, each
    feature's distributions and statistic over time, the rule in words, the name's timeline (``drift=False``: the
    drift part left out, when the browser has it already)."""
    meta = meta if meta is not None else (cache.meta if cache is not None else pd.DataFrame())
    if meta.empty:
        meta = pd.DataFrame({"ts": [], "latency_ms": [], "status": []})
    out: dict[str, Any] = {"name": data.name, "version": data.version, "at": data.at}
    if drift and data.drift_view is not None:
        out["drift_json"] = data.drift_view  # judged in the judge process, serialised there
    elif drift:
        out.update(drift_view(data, cache))
    out.update(
        {
            "traffic": {k: _series(meta, data.at, span, bucket) for k, (span, bucket) in RANGES.items()},
            "accuracy": _accuracy(data),
            "calibration": _calibration(data),
            "tiles_window": fmt_span(data.window_s) if data.window_s else "",
            "timeline": data.timeline,
        }
    )
    return out


def drift_json(part: dict[str, Any]) -> str:
    """The drift part as the widget carries it: one JSON string (ipywidgets neither walks nor re-encodes it)."""
    return json.dumps(part, separators=(",", ":"), allow_nan=False)


def drift_view(data: PanelData, cache: LogCache | None = None) -> dict[str, Any]:
    """``view_model``'s drift part (``DRIFT_KEYS``): the table, distributions, statistic over time, the rule;
    computed where drift was judged (the panel's judge process, ``monitor.judge``) and sent to the kernel ready."""
    moves = data.attribution.moves if data.attribution is not None else {}
    features = _features(data.drift, moves) if not data.drift.empty else []
    window = f"latest {data.drift_rows:,} live rows of v{data.version}" if data.drift_rows else f"v{data.version}"
    return {
        "drift_at": data.drift_at,
        "window": window,
        "rule": data.thresholds.describe(),
        "dataset_drift": data.dataset_drift,
        "drifted": list(data.drifted),
        "features": features,
        "dist": data.distributions,
        "history": _history(cache, [f["name"] for f in features]),
        "no_drift": next((p for p in data.problems if "reference" in p), "no drift table yet"),
        "attribution": _attribution(data),
    }


def _widget_class() -> Any:
    import anywidget
    import traitlets

    class ChartsView(anywidget.AnyWidget):  # type: ignore[misc]
        """Charts and the drift table of the panel, drawn in the browser from ``data``."""

        _esm = script()
        data = traitlets.Dict().tag(sync=True)  # traffic, accuracy, tiles: every refresh (a few kB)
        # table, distributions, history as JSON (``drift_json``): only when drift was judged
        drift_json = traitlets.Unicode("").tag(sync=True)
        timeline = traitlets.List(traitlets.Dict()).tag(sync=True)  # alerts, retrainings...: when one was added

        @property
        def drift(self) -> dict[str, Any]:
            """The drift part last sent (``DRIFT_KEYS``)."""
            return json.loads(self.drift_json) if self.drift_json else {}

        def show(self, model: dict[str, Any]) -> None:
            """Send ``view_model``'s output: the drift part only when it changed (its ``drift_at``), the timeline
            only when it did."""
            part = {k: model.pop(k) for k in DRIFT_KEYS if k in model}
            text = model.pop("drift_json", None) or (drift_json(part) if part else None)
            if text and text != self.drift_json:
                self.drift_json = text
            events = model.pop("timeline", None)
            if events is not None and events != self.timeline:
                self.timeline = events
            self.data = model

    return ChartsView


_classes: dict[str, Any] = {}


def ChartsView(**kwargs: Any) -> Any:  # a class made on first use: anywidget loads lazily
    """The widget that draws ``view_model`` in the browser."""
    if "cls" not in _classes:
        _classes["cls"] = _widget_class()
    return _classes["cls"](**kwargs)
