"""The live panel: ipywidgets (tiles as HTML, the charts and the drift table drawn in the browser by ``view``'s
anywidget; an executed notebook's saved widget state keeps the last picture) refreshed from a background thread;
``open_panel`` picks it or the static snapshot.
"""

from __future__ import annotations

import html
import logging
import threading
import time
import weakref
from collections import deque
from typing import Any

from ..errors import UsageError
from ..registry import Record, Registry
from . import metrics
from .cache import LogCache
from .data import ENDED, PanelData, snapshot
from .html import TILES, StaticPanel, header, notes, tiles
from .judge import Judge
from .source import Source, StatusFn, Watched, watch
from .store import logged_schema
from .style import MUTED, RED, clock
from .view import ChartsView, view_model

__all__ = ["Panel", "open_panel"]

log = logging.getLogger(__name__)

_live: dict[tuple[str, int], weakref.ref[Panel]] = {}
_live_lock = threading.Lock()


class Panel:
    """The live panel: ipywidgets refreshed every ``interval`` seconds from a background thread.

    It stops refreshing when closed (its Close button, ``close()``), on ``stop()``, or when the
    deployment stops; the last picture stays in the widgets (and in a saved notebook's widget
    state). ``data`` is the latest ``PanelData``; ``tiles`` the headline tiles' HTML widgets by key
    (``TILES``), each with the CSS class ``nbdeploy-tile-KEY``. Errors never reach the kernel: they show in the
    status line at the bottom. Rates and latencies cover the last ``window_s`` seconds; drift is
    recomputed at most every ``drift_every_s`` seconds, from the latest ``max_rows`` logged rows; after the first
    picture, by a worker process (``monitor.judge``; ``judge_process=False``: in the kernel), so a refresh costs
    the kernel little whatever the number of features.
    The status shown is ``deployment.status()`` for a handle, else ``status()`` when given, else the registry's.
    """

    def __init__(
        self,
        deployment: Source | Record | str,
        interval: float = 3.0,
        *,
        window_s: float = 30.0,
        drift_every_s: float = 15.0,
        max_rows: int = 2000,
        start: bool = True,
        status: StatusFn | None = None,
        judge_process: bool = True,
    ) -> None:
        if not interval > 0:
            raise UsageError(f"interval must be a positive number of seconds, not {interval!r}")
        self._registry = Registry()
        self._watched: Watched = watch(deployment, self._registry, status)
        self.name, self.version = self._watched.name, self._watched.version
        self._registry.get(self.name, self.version)  # an unknown version fails here, not in every refresh
        self.interval = float(interval)
        self.window_s = window_s
        self.drift_every_s = drift_every_s
        self.max_rows = max_rows
        self.data: PanelData | None = None
        from .. import config

        rec = self._registry.get(self.name, self.version)
        schema = logged_schema(rec.info) if rec.info.schema else {}
        directory = config.deployment_dir(self.name, self.version)
        self.cache = LogCache(directory, schema, keep_rows=max_rows)
        self.judge = Judge(self.name, self.version, directory, schema, max_rows) if judge_process else None
        if self.judge is not None:
            weakref.finalize(self, self.judge.close)  # a panel dropped without close() ends its worker too
        self.error: str | None = None  # the last refresh's error, if it failed
        self._scrapes: deque[metrics.Scrape] = deque()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one refresh at a time
        self._thread: threading.Thread | None = None
        self.widget = self._build()

        self.refresh()
        if start and self.data is not None and self.data.status not in ENDED:
            self._claim()
            if self.judge is not None and schema:
                self.judge.warm(self.cache)
            self._thread = threading.Thread(target=self._run, name=f"nbdeploy-panel-{self.name}", daemon=True)
            self._thread.start()
        else:
            self._stop.set()
            self._set_status(f"not live: deployment {self.data.status}" if self.data else "not live", keep=True)

    def _build(self) -> Any:
        """The widgets: header and Close button, tiles, traffic and predictions, drift and accuracy, status."""
        import ipywidgets as w

        self._header = w.HTML()
        self.tiles = {k: w.HTML().add_class(f"nbdeploy-tile-{k}") for k in TILES}
        self._close_button = w.Button(description="Close", tooltip="Stop the updates and remove the panel")
        self._close_button.layout = w.Layout(width="80px")
        self._close_button.on_click(lambda _: self.close())
        self.charts = ChartsView()  # traffic, accuracy, calibration, predictions, drift table, history (SVG)
        self._status = w.HTML().add_class("nbdeploy-status")
        row = {"grid_gap": "8px", "flex_flow": "row wrap"}
        return w.VBox(
            [
                w.HBox(
                    [self._header, self._close_button],
                    layout=w.Layout(justify_content="space-between", align_items="center", max_width="1050px"),
                ),
                w.HBox(list(self.tiles.values()), layout=w.Layout(**row)),
                self.charts,
                self._status,
            ],
            layout=w.Layout(padding="4px"),
        ).add_class("nbdeploy-panel")

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
                    if self.judge is not None:
                        self.judge.close()  # nothing more to judge
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
        if self.judge is not None:
            self.judge.close()
        self.cache.close()
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
                    self._watched,
                    self._previous(time.time()),
                    window_s=self.window_s,
                    max_rows=self.max_rows,
                    registry=self._registry,
                    reuse=self.data,
                    drift_every_s=self.drift_every_s,
                    cache=self.cache,
                    judge=self.judge,
                )
                if data.scrape is not None:
                    if self._scrapes and data.scrape.total < self._scrapes[-1].total:
                        self._scrapes.clear()  # the service restarted: its counters began again
                    self._scrapes.append(data.scrape)
                self._draw(data)
                self.data, self.error = data, None
                every = "" if self._stop.is_set() else f" &middot; refreshed every {self.interval:g} s"
                problems = "".join(f" &middot; {html.escape(p)}" for p in notes(data))
                self._set_status(f"updated {self._when()}{every}{problems}")
            except Exception as exc:
                log.debug("nbdeploy monitor panel refresh failed", exc_info=True)
                self.error = f"{type(exc).__name__}: {exc}"
                self._set_status(f"refresh failed at {clock(time.time())}: {html.escape(self.error)}", error=True)
            return self.data

    def _when(self) -> str:
        return clock(self.data.at) if self.data else "–"

    def _draw(self, data: PanelData) -> None:
        self._header.value = header(data)
        for key, value in tiles(data).items():
            if self.tiles[key].value != value:
                self.tiles[key].value = value
        if self.data is None or data.drift_at != self.data.drift_at or self.data.drift is not data.drift:
            self.charts.show(view_model(data, self.cache))
        else:  # drift unchanged: the traffic and accuracy only
            self.charts.show(view_model(data, self.cache, drift=False))

    def _set_status(self, text: str, error: bool = False, keep: bool = False) -> None:
        if keep or error or not self._stop.is_set() or self.data is None:
            colour = RED if error else MUTED
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


def open_panel(
    deployment: Source | Record | str,
    interval: float = 3.0,
    live: bool = True,
    *,
    status: StatusFn | None = None,
) -> Panel | StaticPanel:
    """The panel for ``deployment``: live widgets, or a static HTML snapshot with ``live=False``.

    Pass the deployment handle (``open_panel(dep, ...)``): the panel shows its ``status()``. A
    registry ``Record`` or a name is accepted too, with ``status`` or else the registry's status.
    """
    if live:
        return Panel(deployment, interval, status=status)
    return StaticPanel(snapshot(deployment, status=status))
