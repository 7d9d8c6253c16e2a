"""The champion/challenger panel: the live version against its candidate, as the evidence accumulates.

Agreement over time and each version's p95 latency (a chart), the flip matrix (or the differences of numbers),
latency and errors side by side, the labelled comparison with its p-value once feedback arrives, each promotion
rule's verdict, and the first disagreeing rows. ``nbdeploy.comparison`` computes it all; this module only shows it.
The live view keeps one ``Comparer``, so each refresh reads only the rows the router mirrored since the last one
(at most ``max_rows`` are kept), and redraws the chart only when they changed.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from typing import Any

from ..comparison import (
    MAX_ROWS,
    NUMBERS,
    Comparer,
    Comparison,
    PromotionRules,
    RuleResult,
    as_rules,
    check_rules,
    disagreements_display,
    fmt_p,
    latency_display,
    table_html,
)
from ..errors import UsageError
from ..router.contract import ENDPOINT_FILE, read
from .figures import agreement_figure
from .html import _img
from .html import _tile as html_tile
from .style import GREEN, MUTED, ORANGE, RED, clock, fmt_ms, fmt_pct

__all__ = ["ComparisonPanel", "StaticComparison", "comparison_html", "comparison_panel", "comparison_tiles"]

log = logging.getLogger(__name__)

TILES = ("agreement", "labelled", "errors", "p95", "verdict")


def _tile(label: str, value: str, sub: str = "", colour: str = "#1f2328") -> str:
    return html_tile(label, value, sub, colour, min_width=150, size=20)


def comparison_tiles(c: Comparison, results: list[RuleResult]) -> dict[str, str]:
    """The headline tiles by key (``TILES``): agreement, the labelled comparison, errors, p95, the verdict."""
    s = c.summary
    if s["agreement"] is None:
        agree = _tile("Agreement", "–", "split traffic: unpaired")
    else:
        colour = GREEN if s["agreement"] >= 0.99 else ORANGE if s["agreement"] >= 0.95 else RED
        sub = f"{s['rows_compared']:,} rows · {s['disagreeing_rows']:,} differ"
        agree = _tile("Agreement", fmt_pct(s["agreement"]), sub, colour)
    if s["live_metric"] is None or s["candidate_metric"] is None:
        labelled = _tile("On labels", "–", "waiting for feedback")
    else:
        d = s["difference"] or 0.0
        value = f"{d * 100:+.1f} pts" if s["metric"] == "accuracy" else f"MAE {d:+.3g}"
        good = (d > 0) if s["metric"] == "accuracy" else (d < 0)
        significant = s["p_value"] is not None and s["p_value"] < 0.05
        colour = (GREEN if good else RED) if significant else "#1f2328"
        rows = f"{s['labelled_rows']:,} rows" + ("" if s["paired"] else ", unpaired")
        labelled = _tile(
            "On labels (candidate − live)", value, f"{s['test']} p = {fmt_p(s['p_value'])} · {rows}", colour
        )
    errors = _tile(
        "Error rate (candidate / live)",
        f"{fmt_pct(s['candidate_error_rate'])} / {fmt_pct(s['live_error_rate'])}",
        f"{s['candidate_requests']:,} / {s['live_requests']:,} requests",
    )
    p95 = _tile("Latency p95 (candidate / live)", f"{fmt_ms(s['candidate_p95_ms'])} / {fmt_ms(s['live_p95_ms'])}")
    failed = [r.name for r in results if not r.passed]
    verdict = (
        _tile("Promotion", "allowed", "all rules pass", GREEN)
        if not failed
        else _tile("Promotion", "refused", ", ".join(failed), RED)
    )
    return {"agreement": agree, "labelled": labelled, "errors": errors, "p95": p95, "verdict": verdict}


def _header(c: Comparison) -> str:
    mode = "shadow, paired" if c.mode == "shadow" else "split, unpaired"
    return (
        f"<div style='font-size:15px'><b>{html.escape(c.name)}</b> &middot; live v{c.champion} against candidate"
        f" v{c.challenger} <span style='color:{MUTED}'>({mode})</span></div>"
    )


def _sentence(c: Comparison) -> str:
    return f"<div class='nbdeploy-sentence' style='font-size:14px;margin:4px 0'>{html.escape(c.sentence())}</div>"


def _flips(c: Comparison) -> str:
    if c.kind == NUMBERS:
        return table_html(c.differences, "Differences (candidate - live)", max_rows=20)
    return table_html(c.flips, "Flips: live class (rows) → candidate class (columns)", max_rows=20)


def _latency(c: Comparison) -> str:
    return table_html(latency_display(c), f"Latency and errors ({c.summary['latency_source']})")


def _rules(results: list[RuleResult]) -> str:
    items = "".join(
        f"<li style='color:{GREEN if r.passed else RED}'><b>{html.escape(r.name)}</b>: {html.escape(r.sentence)}</li>"
        for r in results
    )
    return (
        "<div><div style='font-size:13px;font-weight:600;margin:6px 0 2px'>Promotion rules</div>"
        f"<ul style='font-size:12px;margin:0;padding-left:18px'>{items}</ul></div>"
    )


def _disagreements(c: Comparison) -> str:
    n = len(c.disagreements)
    return table_html(disagreements_display(c), f"Disagreeing rows ({n:,}; the first shown)") if n else ""


def _chart(c: Comparison) -> bytes:
    return agreement_figure(c.agreement_over_time, c.bucket_s, c.at, c.live_label, c.candidate_label)


def comparison_html(c: Comparison, results: list[RuleResult] | None = None) -> str:
    """One snapshot of the panel as self-contained HTML (the chart as a data URI): for saved notebooks."""
    results = results if results is not None else check_rules(c)
    tiles = comparison_tiles(c, results)
    notes = "".join(f"<div style='color:{MUTED};font-size:11px'>{html.escape(n)}</div>" for n in c.notes)
    return (
        "<div class='nbdeploy-challenger' style='font-family:system-ui,sans-serif;max-width:1080px'>"
        f"{_header(c)}{_sentence(c)}"
        f"<div style='display:flex;gap:8px;flex-wrap:wrap;margin:6px 0'>{''.join(tiles[k] for k in TILES)}</div>"
        "<div style='display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start'>"
        f"{_img(_chart(c), 600)}<div>{_flips(c)}{_latency(c)}</div></div>"
        f"{_rules(results)}{_disagreements(c)}{notes}"
        f"<div style='color:{MUTED};font-size:11px;margin-top:4px'>snapshot taken at {clock(c.at)}"
        " &middot; live view: <code>comparison_panel(name)</code></div></div>"
    )


class StaticComparison:
    """A snapshot of the champion/challenger panel that renders as plain HTML."""

    def __init__(self, comparison: Comparison, results: list[RuleResult] | None = None) -> None:
        self.comparison = comparison
        self.results = results if results is not None else check_rules(comparison)

    def _repr_html_(self) -> str:
        return comparison_html(self.comparison, self.results)

    def __repr__(self) -> str:
        return f"<StaticComparison {self.comparison.sentence()}>"


class ComparisonPanel:
    """The live champion/challenger view: ipywidgets refreshed every ``interval`` seconds from a background thread.

    It stops when closed (its Close button, ``close()``), on ``stop()``, or once the candidate it watches is no
    longer the name's candidate (promoted or withdrawn); the last picture stays. Errors never reach the kernel: they
    show in the status line. ``comparison`` and ``results`` are the latest.
    """

    def __init__(
        self,
        name: str,
        interval: float = 3.0,
        *,
        champion: int | None = None,
        challenger: int | None = None,
        since: Any = None,
        rules: PromotionRules | dict[str, Any] | None = None,
        max_rows: int = MAX_ROWS,
        start: bool = True,
    ) -> None:
        if not interval > 0:
            raise UsageError(f"interval must be a positive number of seconds, not {interval!r}")
        self.name = name
        self.interval = float(interval)
        self.since = since
        self.rules = as_rules(rules)
        self.comparer = Comparer(
            name, champion, challenger, tolerance=self.rules.tolerance, max_rows=max_rows
        )  # unknown names and missing candidates fail here, not in every refresh
        self.comparison: Comparison | None = None
        self.results: list[RuleResult] = []
        self.error: str | None = None
        self._drawn: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.widget = self._build()
        self.refresh()
        if start:
            self._thread = threading.Thread(target=self._run, name=f"nbdeploy-challenger-{name}", daemon=True)
            self._thread.start()
        else:
            self._stop.set()

    def _build(self) -> Any:
        import ipywidgets as w

        self._header = w.HTML()
        self._sentence = w.HTML()
        self.tiles = {k: w.HTML().add_class(f"nbdeploy-tile-{k}") for k in TILES}
        close = w.Button(description="Close", tooltip="Stop the updates and remove the panel")
        close.layout = w.Layout(width="80px")
        close.on_click(lambda _: self.close())
        self._chart = w.Image(format="png", layout=w.Layout(width="600px"))
        self._tables = w.HTML()
        self._rules = w.HTML()
        self._disagreements = w.HTML()
        self._status = w.HTML().add_class("nbdeploy-status")
        row = {"grid_gap": "8px", "flex_flow": "row wrap"}
        return w.VBox(
            [
                w.HBox(
                    [self._header, close],
                    layout=w.Layout(justify_content="space-between", align_items="center", max_width="1050px"),
                ),
                self._sentence,
                w.HBox(list(self.tiles.values()), layout=w.Layout(**row)),
                w.HBox([self._chart, self._tables], layout=w.Layout(**row, align_items="flex-start")),
                self._rules,
                self._disagreements,
                self._status,
            ],
            layout=w.Layout(padding="4px"),
        ).add_class("nbdeploy-challenger")

    @property
    def live(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                if not self._still_candidate():
                    self._stop.set()
                    self._set_status(
                        f"v{self.comparer.challenger} is no longer the candidate of '{self.name}' (promoted or"
                        f" withdrawn): updates ended ({self._when()})"
                    )
                    return
                self.refresh()
        except BaseException as exc:  # refresh() catches everything; this is the last line of defence
            log.debug("nbdeploy challenger panel thread failed", exc_info=True)
            self._set_status(f"updates ended: {html.escape(f'{type(exc).__name__}: {exc}')}", error=True)

    def _still_candidate(self) -> bool:
        path = self.comparer.directory / ENDPOINT_FILE
        if not path.exists():
            return True  # compared by hand, without an endpoint
        ep = read(path)
        return ep.candidate is not None and ep.candidate.upstream.version == self.comparer.challenger

    def stop(self, reason: str = "stopped") -> None:
        """Stop refreshing; the panel keeps its last picture."""
        was_live = not self._stop.is_set()
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval + 60)
        if was_live:
            self._set_status(f"updates {reason} (last data {self._when()})")

    def close(self) -> None:
        """Stop refreshing and remove the panel from the notebook."""
        self.stop("closed")
        _close_tree(self.widget)

    def refresh(self) -> Comparison | None:
        """Compare again (reading only what was mirrored since) and draw; on failure keep the last picture."""
        with self._lock:
            try:
                c = self.comparer.compare(self.since)
                results = check_rules(c, self.rules)
                self._draw(c, results)
                self.comparison, self.results, self.error = c, results, None
                every = "" if self._stop.is_set() else f" &middot; refreshed every {self.interval:g} s"
                self._set_status(f"updated {self._when()}{every}")
            except Exception as exc:
                log.debug("nbdeploy challenger panel refresh failed", exc_info=True)
                self.error = f"{type(exc).__name__}: {exc}"
                self._set_status(f"refresh failed at {clock(time.time())}: {html.escape(self.error)}", error=True)
            return self.comparison

    def _draw(self, c: Comparison, results: list[RuleResult]) -> None:
        self._header.value = _header(c)
        self._sentence.value = _sentence(c)
        for key, value in comparison_tiles(c, results).items():
            if self.tiles[key].value != value:
                self.tiles[key].value = value
        over = c.agreement_over_time
        basis = (c.summary["requests"], c.summary["rows_compared"], len(over), c.bucket_s)
        if basis != self._drawn:  # drawing is the costly part of a refresh
            self._chart.value = _chart(c)
            self._drawn = basis
        self._tables.value = _flips(c) + _latency(c)
        self._rules.value = _rules(results)
        self._disagreements.value = _disagreements(c)

    def _when(self) -> str:
        return clock(self.comparison.at) if self.comparison is not None else "–"

    def _set_status(self, text: str, error: bool = False) -> None:
        colour = RED if error else MUTED
        self._status.value = f"<div style='font-size:11px;color:{colour}'>{text}</div>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        state = "live" if self.live else "stopped"
        return (
            f"<ComparisonPanel {self.name} v{self.comparer.champion} vs v{self.comparer.challenger}"
            f" ({state}, every {self.interval:g} s)>"
        )


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def comparison_panel(
    name: str,
    live: bool = True,
    interval: float = 3.0,
    *,
    champion: int | None = None,
    challenger: int | None = None,
    since: Any = None,
    rules: PromotionRules | dict[str, Any] | None = None,
) -> ComparisonPanel | StaticComparison:
    """The champion/challenger panel of ``name``: live widgets, or a static HTML snapshot with ``live=False``."""
    if live:
        return ComparisonPanel(name, interval, champion=champion, challenger=challenger, since=since, rules=rules)
    r = as_rules(rules)
    c = Comparer(name, champion, challenger, tolerance=r.tolerance).compare(since)
    return StaticComparison(c, check_rules(c, r))
