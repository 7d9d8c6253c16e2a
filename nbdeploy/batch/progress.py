"""How far a job is: a bar with rows per second and the time left.

In a notebook, an ipywidgets bar and a line of figures under the cell, updated in place; in a terminal, one line on
stderr rewritten with ``\\r``. Silent elsewhere (pipes, pytest) unless ``NBDEPLOY_PROGRESS=1`` asks for the
lines. Updates are throttled: a job of a million rows must not spend its time drawing.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

EVERY_S = 0.25


def clock(seconds: float) -> str:
    """``0:01:23``."""
    s = max(round(seconds), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _in_kernel() -> bool:
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class Bar:
    """Progress of one job. ``show``: True, False, or None (decide from where it runs)."""

    def __init__(self, title: str, total: int | None, already: int, show: bool | None = None) -> None:
        self.title = title
        self.total = total
        self.already = already  # rows done by an earlier run: counted in the bar, not in the rate
        self.started = time.perf_counter()
        self._last = 0.0
        self._widget: Any = None
        self._stream: TextIO | None = None
        forced = os.environ.get("NBDEPLOY_PROGRESS")
        if show is False or (show is None and forced == "0"):
            return
        if _in_kernel():
            self._widget = self._make_widget()
        elif show or forced == "1" or sys.stderr.isatty():
            self._stream = sys.stderr
        self.update(0, 0, force=True)

    def _make_widget(self) -> Any:
        import ipywidgets as w
        from IPython.display import display

        bar = w.IntProgress(min=0, max=max(self.total or 1, 1), value=self.already, description="scoring")
        text = w.HTML()
        box = w.VBox([w.HBox([bar, text])])
        display(box)
        return bar, text

    def line(self, done: int, quarantined: int, final: bool = False) -> str:
        """The figures: rows done of the total, rows/s, time left (or taken), rows quarantined."""
        elapsed = time.perf_counter() - self.started
        now = self.already + done + quarantined
        rate = (done + quarantined) / elapsed if elapsed > 0 else 0.0
        parts = [f"{now:,}" + (f"/{self.total:,} rows" if self.total else " rows")]
        if self.total:
            parts.insert(0, f"{min(now / self.total, 1.0):.0%}")
        parts.append(f"{rate:,.0f} rows/s")
        if final:
            parts.append(f"in {clock(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"{clock((self.total - now) / rate)} left")
        parts.append(f"{quarantined:,} quarantined")
        return " · ".join(parts)

    def update(self, done: int, quarantined: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < EVERY_S:
            return
        self._last = now
        self._draw(done, quarantined, final=False)

    def _draw(self, done: int, quarantined: int, final: bool) -> None:
        text = self.line(done, quarantined, final)
        if self._widget is not None:
            bar, label = self._widget
            if self.total:
                bar.value = min(self.already + done + quarantined, bar.max)
            label.value = f"<span style='font-family:monospace;color:#57606a'>{text}</span>"
        elif self._stream is not None:
            width, filled = 24, 0
            if self.total:
                filled = int(width * min((self.already + done + quarantined) / self.total, 1.0))
            bar_text = "█" * filled + "·" * (width - filled)
            self._stream.write(f"\r{self.title} {bar_text} {text}\x1b[K" + ("\n" if final else ""))
            self._stream.flush()

    def close(self, done: int, quarantined: int, ok: bool) -> None:
        """The last figures; the widget turns green (or red if the job failed)."""
        self._draw(done, quarantined, final=True)
        if self._widget is not None:
            bar, _ = self._widget
            if ok and self.total:
                bar.value = bar.max
            bar.bar_style = "success" if ok else "danger"
            bar.description = "scored" if ok else "stopped"
