"""The fleet: every running deployment as a compact tile (status, requests/s, p95, errors, drift); a click on
one opens its panel below. ``%monitor`` without a name."""

from __future__ import annotations

import html
import logging
from typing import Any

from ..registry import Registry
from .data import PanelData, snapshot
from .style import GREEN, GREY, MUTED, ORANGE, RED, STATE_COLOUR, fmt_ms, fmt_pct, fmt_rate

__all__ = ["Fleet", "fleet_tile"]

log = logging.getLogger(__name__)


def fleet_tile(d: PanelData) -> str:
    """One deployment's tile as HTML."""
    colour = STATE_COLOUR.get(d.status, ORANGE)
    n_features = max(len(d.drift) - ("prediction" in d.drift.index), 0)
    drift = "–" if d.drift.empty else f"{len(d.drifted)} of {n_features}"
    drift_colour = RED if d.drifted else GREEN if not d.drift.empty else GREY
    return (
        f"<div style='font-size:14px'><b>{html.escape(d.name)}</b> <span style='color:{MUTED}'>v{d.version}</span> "
        f"<b style='color:{colour}'>{html.escape(d.status)}</b></div>"
        f"<div style='font-size:12px;color:{MUTED};line-height:1.5'>{fmt_rate(d.rate)} req/s · p95 "
        f"{fmt_ms(d.p95_ms)} · errors {fmt_pct(d.error_rate)}<br>drifted "
        f"<b style='color:{drift_colour}'>{drift}</b> · last {d.window_s:g} s</div>"
    )


class Fleet:
    """Every deployment's current version as a tile; clicking one opens its live panel under the tiles."""

    def __init__(self, interval: float = 3.0, registry: Registry | None = None) -> None:
        import ipywidgets as w

        self.interval = interval
        self._registry = registry or Registry()
        self.records = [r for r in self._registry.list() if r.status not in ("stopped", "failed")]
        self.buttons: dict[str, Any] = {}
        self.panel: Any = None
        tiles = []
        for rec in self.records:
            try:
                data = snapshot(rec, registry=self._registry, window_s=60.0)
                body = fleet_tile(data)
            except Exception as exc:  # one unreadable deployment does not hide the others
                log.debug("fleet tile failed", exc_info=True)
                body = f"<b>{html.escape(rec.name)}</b> v{rec.version}<br>{html.escape(type(exc).__name__)}"
            tile = w.HTML(body).add_class("nbdeploy-fleet-tile").add_class(f"nbdeploy-fleet-{rec.name}")
            button = w.Button(
                description=f"open {rec.name}", tooltip=f"open the panel of {rec.name}", layout=w.Layout(width="auto")
            )
            button.add_class("nbdeploy-fleet-open")
            button.on_click(lambda _, name=rec.name: self.open(name))
            self.buttons[rec.name] = button
            tiles.append(
                w.VBox([tile, button], layout=w.Layout(border="1px solid #d0d7de", padding="6px", width="260px"))
            )
        self._below = w.Output()
        head = w.HTML(f"<b>{len(self.records)} deployments</b> · click one to open its panel")
        self.widget = w.VBox([head, w.HBox(tiles, layout=w.Layout(flex_flow="row wrap", grid_gap="8px")), self._below])
        self.widget.add_class("nbdeploy-fleet")

    def open(self, name: str) -> Any:
        """Open ``name``'s live panel under the tiles (closing the one open before)."""
        from .widget import Panel

        if self.panel is not None:
            self.panel.close()
        rec = next(r for r in self.records if r.name == name)
        self.panel = Panel(rec, self.interval)
        self._below.clear_output()
        with self._below:
            from IPython.display import display

            display(self.panel)
        return self.panel

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
