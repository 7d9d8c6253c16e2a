"""The panel's HTML: headline tiles, the header line, the drift table, and one snapshot as
self-contained HTML (``StaticPanel``) for saved notebooks, papermill outputs and the docs site.
"""

from __future__ import annotations

import base64
import html

from .data import PanelData
from .figures import accuracy_figure, calibration_figure, predictions_figure, traffic_figure
from .history import history_html
from .style import (
    GREY,
    ORANGE,
    RED,
    STATE_COLOUR,
    STATUS_STYLE,
    clock,
    fmt_count,
    fmt_ms,
    fmt_number,
    fmt_pct,
    fmt_rate,
    fmt_span,
)

__all__ = ["NO_FEEDBACK", "TILES", "StaticPanel", "drift_table", "header", "notes", "static_html", "tiles"]

TILES = ("requests", "rate", "p50", "p95", "errors", "drift", "auc")

NO_FEEDBACK = (
    "<div style='color:#59636e;font-size:12px;padding:8px 0'>No feedback yet: accuracy over time appears once "
    "ground truth arrives, e.g. <code>dep.feedback(dep.last_request_id, y_true)</code>.</div>"
)


def _tile(label: str, value: str, sub: str = "", colour: str = "#1f2328", min_width: int = 128, size: int = 22) -> str:
    """One headline tile (the panel's and the comparison's, which is wider with a smaller figure)."""
    return (
        "<div style='border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;background:#fff;"
        f"min-width:{min_width}px;line-height:1.25'>"
        f"<div style='font-size:12px;color:#59636e'>{html.escape(label)}</div>"
        f"<div style='font-size:{size}px;font-weight:600;color:{colour};font-variant-numeric:tabular-nums'>"
        f"{html.escape(value)}</div>"
        f"<div style='font-size:11px;color:#59636e;min-height:14px'>{html.escape(sub)}</div></div>"
    )


def tiles(data: PanelData) -> dict[str, str]:
    """The headline tiles as HTML, by key (see ``TILES``)."""
    over = f"last {fmt_span(data.window_s)}" if data.window_s else ""
    err_colour = RED if (data.error_rate or 0) >= 0.05 else ORANGE if data.error_rate else "#1f2328"
    n_features = max(len(data.drift) - ("prediction" in data.drift.index), 0)
    drift_value = "–" if data.drift.empty else f"{len(data.drifted)} of {n_features}"
    drift_sub = ", ".join(data.drifted[:3]) + (" …" if len(data.drifted) > 3 else "") if data.drifted else ""
    if not data.drift.empty and not data.drifted:
        judged = (data.drift["test"] != "too few rows").any()
        drift_sub = "none drifted" if judged else "waiting for traffic"
    errors_sub = f"{fmt_count(data.errors)} failed in all" if data.errors else over
    total_sub = "since the service started" if data.total_from == "metrics" else "in the request log"
    auc_value = "–" if data.auc is None else f"{data.auc:.3f}"
    if data.log_loss is not None:
        auc_sub = f"log-loss {data.log_loss:.3f} · {data.scored:,} rows"
    else:
        auc_sub = "needs predict_proba + feedback"
    return {
        "requests": _tile("Requests", fmt_count(data.total_requests), total_sub),
        "rate": _tile("Requests/s", fmt_rate(data.rate), over),
        "p50": _tile("Latency p50", fmt_ms(data.p50_ms), over),
        "p95": _tile("Latency p95", fmt_ms(data.p95_ms), over),
        "errors": _tile("Error rate", fmt_pct(data.error_rate), errors_sub, err_colour),
        "drift": _tile("Drifted features", drift_value, drift_sub, RED if data.drifted else "#1f2328"),
        "auc": _tile("AUC", auc_value, auc_sub),
    }


def header(data: PanelData) -> str:
    colour = STATE_COLOUR.get(data.status, ORANGE)
    url = f" &middot; <code>{html.escape(data.url)}</code>" if data.url else ""
    return (
        f"<div style='font-size:15px'><b>{html.escape(data.name)}</b> &middot; version {data.version} &middot; "
        f"<b style='color:{colour}'>{html.escape(data.status)}</b>{url}</div>"
    )


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
        numbers = [fmt_number(r[k]) for k in ("statistic", "p_value", "psi")]
        cells = [str(feature), status, test, *numbers, f"{r['n_current']:,}"]
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


def notes(data: PanelData) -> list[str]:
    """Problems to list under the panel (a missing reference is said in the drift table's place already)."""
    return [p for p in data.problems if not (data.drift.empty and "reference" in p)]


def _img(png: bytes, width_px: int) -> str:
    data = base64.b64encode(png).decode()
    return f"<img src='data:image/png;base64,{data}' style='width:{width_px}px;max-width:100%'/>"


def static_html(data: PanelData) -> str:
    """One snapshot as self-contained HTML (tiles, PNGs as data URIs, drift table, history): for saved notebooks."""
    t = tiles(data)
    acc = accuracy_figure(data)
    cal = calibration_figure(data)
    problems = "".join(f"<div style='color:{ORANGE};font-size:12px'>{html.escape(p)}</div>" for p in notes(data))
    return (
        "<div class='nbdeploy-panel' style='font-family:system-ui,sans-serif;max-width:1080px'>"
        f"{header(data)}"
        f"<div style='display:flex;gap:8px;flex-wrap:wrap;margin:6px 0'>{''.join(t[k] for k in TILES)}</div>"
        "<div style='display:flex;gap:8px;flex-wrap:wrap'>"
        f"{_img(traffic_figure(data), 600)}{_img(predictions_figure(data), 440)}</div>"
        "<div style='display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start;margin-top:6px'>"
        f"<div>{drift_table(data)}</div><div>{_img(acc, 440) if acc else NO_FEEDBACK}</div>"
        f"{f'<div>{_img(cal, 320)}</div>' if cal else ''}</div>"
        f"{history_html(data.timeline, data.at)}"
        f"{problems}<div style='color:#59636e;font-size:11px;margin-top:4px'>snapshot taken at {clock(data.at)}"
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
