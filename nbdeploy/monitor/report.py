"""A standalone drift and health report: one HTML file that opens without a kernel or a network.

The tiles as HTML, the charts and the drift table drawn by the panel's own script (inlined), the data inlined as
JSON. For sharing and audits: ``dep.report("drift.html")``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from .. import config
from .cache import LogCache
from .data import PanelData
from .html import TILES, header, notes, tiles
from .style import MUTED, ORANGE, clock
from .view import script, view_model

__all__ = ["report_html", "write_report"]


def _inline_script() -> str:
    """The panel's script without its module export, as a classic script (no module loading from a file URL)."""
    return script().split("// --- anywidget", 1)[0]


def report_html(data: PanelData, cache: LogCache | None = None) -> str:
    """The whole report as one HTML document; without ``cache`` the request log is read here (traffic charts)."""
    if cache is None:
        cache = LogCache(config.deployment_dir(data.name, data.version), {})
        cache.update()
    view = view_model(data, cache)
    view.update(json.loads(view.pop("drift_json", "{}")))  # a live panel's data: its drift part came as JSON
    model = json.dumps(view, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    t = tiles(data)
    problems = "".join(f"<div style='color:{ORANGE}'>{html.escape(p)}</div>" for p in notes(data))
    title = f"{data.name} v{data.version}: monitoring report"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{html.escape(title)}</title></head>"
        "<body style='font-family:system-ui,sans-serif;margin:16px'>"
        f"<div class='nbdeploy-report'>{header(data)}"
        f"<div style='color:{MUTED};font-size:12px'>report taken at {clock(data.at)} "
        f"({html.escape(_iso(data.at))}); tiles cover the last {data.window_s:g} s</div>"
        f"<div style='display:flex;gap:8px;flex-wrap:wrap;margin:6px 0'>{''.join(t[k] for k in TILES)}</div>"
        f"{problems}<div id='nbd-panel'></div></div>"
        f"<script>{_inline_script()}\n"
        f"const el = document.getElementById('nbd-panel'); nbdeployStyle(el); nbdeployPanel(el, {model}, {{}});"
        "</script></body></html>"
    )


def _iso(at: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


def write_report(data: PanelData, path: str | Path, cache: LogCache | None = None) -> Path:
    out = Path(path)
    out.write_text(report_html(data, cache), encoding="utf-8")
    return out
