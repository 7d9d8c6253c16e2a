"""Colours and number formats shared by the panel's figures, HTML and widget."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

# Colours (GitHub's Primer palette: readable on white, distinguishable for the common colour blindnesses).
BLUE, ORANGE, RED, GREEN, GREY = "#0969da", "#bc4c00", "#cf222e", "#1a7f37", "#6e7781"
PURPLE = "#8250df"
REFERENCE_COLOUR, LIVE_COLOUR = "#8c959f", BLUE
STATUS_STYLE = {  # drift table rows: background, text
    "drifted": ("#ffebe9", RED),
    "ok": ("#dafbe1", GREEN),
    "too few rows": ("#f6f8fa", GREY),
}
STATE_COLOUR = {"running": GREEN, "stopped": GREY, "failed": RED}
MUTED = "#59636e"  # secondary text


def fmt_count(n: float | None) -> str:
    return "–" if n is None else f"{int(n):,}"


def fmt_rate(r: float | None) -> str:
    if r is None:
        return "–"
    if r == 0:
        return "0"
    return f"{r:,.0f}" if r >= 100 else f"{r:.1f}" if r >= 1 else f"{r:.2f}"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def fmt_pct(x: float | None) -> str:
    if x is None:
        return "–"
    return "0 %" if x == 0 else f"{x * 100:.2f} %" if x < 0.01 else f"{x * 100:.1f} %"


def fmt_span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def fmt_number(x: Any, digits: int = 3) -> str:
    """A table cell: fixed digits, scientific for very large or small floats, blank for None and NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and (abs(x) >= 1000 or (x != 0 and abs(x) < 10**-digits)):
        return f"{x:.2e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def clock(at: float) -> str:
    """Epoch seconds as the local wall-clock time, HH:MM:SS."""
    return datetime.fromtimestamp(at).astimezone().strftime("%H:%M:%S")
