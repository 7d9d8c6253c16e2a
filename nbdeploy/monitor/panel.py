"""The monitoring panel of one deployment version: headline tiles, traffic and latency over time,
predictions against the reference, the drift table, accuracy from feedback, and AUC, log-loss and calibration of
logged probabilities.

A facade over the modules that make it, the data flowing one way:

- ``data``: ``snapshot`` computes what the panel shows (``PanelData``; no widgets, no drawing);
- ``figures``: matplotlib (Agg) PNGs of a ``PanelData``;
- ``html``: tiles, header, drift table, and ``StaticPanel`` / ``static_html`` for saved notebooks;
- ``widget``: ``Panel``, the live ipywidgets view refreshed from a background thread, and ``open_panel``;
- ``source``: what the panel watches, and ``Source``, what it needs of a deployment handle (its status).
"""

from __future__ import annotations

from .data import ENDED, PanelData, snapshot
from .figures import accuracy_figure, calibration_figure, predictions_figure, traffic_figure
from .html import NO_FEEDBACK, TILES, StaticPanel, drift_table, header, static_html, tiles
from .source import Source, StatusFn
from .widget import Panel, open_panel

__all__ = [
    "ENDED",
    "NO_FEEDBACK",
    "TILES",
    "Panel",
    "PanelData",
    "Source",
    "StaticPanel",
    "StatusFn",
    "accuracy_figure",
    "calibration_figure",
    "drift_table",
    "header",
    "open_panel",
    "predictions_figure",
    "snapshot",
    "static_html",
    "tiles",
    "traffic_figure",
]
