"""What a job did, as figures a script can check and a card a notebook shows."""

from __future__ import annotations

import html
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd

from .progress import clock


@dataclass
class BatchResult:
    """The outcome of ``score``: rows scored and quarantined in this run, rows an earlier run had done (skipped),
    seconds and rows per second; ``quarantine()`` and ``read()`` give the rows themselves."""

    deployment: str
    version: int | None
    url: str
    method: str
    key: str
    source: str
    destination: str
    quarantine_at: str
    rows_scored: int = 0
    rows_quarantined: int = 0
    rows_skipped: int = 0
    seconds: float = 0.0
    chunks: int = 0
    resumed: bool = False
    retries: int = 0
    marked_for_monitor: int = 0
    job: str = ""  # the id its requests carry in the request log's ``batch_requests``
    _sink: Any = field(default=None, repr=False, compare=False)

    @property
    def rows_per_s(self) -> float:
        """Rows scored or quarantined per second of this run."""
        return (self.rows_scored + self.rows_quarantined) / self.seconds if self.seconds > 0 else 0.0

    def to_frame(self) -> pd.DataFrame:
        """One row: the figures of this run."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        row["rows_per_s"] = round(self.rows_per_s, 1)
        order = ["deployment", "version", "rows_scored", "rows_quarantined", "rows_skipped", "seconds", "rows_per_s"]
        return pd.DataFrame([row])[order + [k for k in row if k not in order]]

    def quarantine(self) -> pd.DataFrame:
        """The quarantined rows: key, column, value, reason and the row as JSON."""
        return self._sink.read_quarantine()

    def read(self) -> pd.DataFrame:
        """The destination's rows: the key and the predictions (all of them: mind the memory)."""
        return self._sink.read()

    def _repr_html_(self) -> str:
        rate = f"{self.rows_per_s:,.0f} rows/s"
        version = f" v{self.version}" if self.version is not None else ""
        bad_colour = "#cf222e" if self.rows_quarantined else "#1a7f37"
        rows = [
            ("Deployment", f"<b>{html.escape(self.deployment)}</b>{version} · <code>{html.escape(self.url)}</code>"),
            ("Source", f"<code>{html.escape(self.source)}</code>"),
            ("Destination", f"<code>{html.escape(self.destination)}</code> (key <code>{html.escape(self.key)}</code>,"
             f" {html.escape(self.method)})"),
            ("Scored", f"<b>{self.rows_scored:,}</b> rows in {self.seconds:.1f} s ({clock(self.seconds)}) · {rate}"
             f" · {self.chunks:,} chunks"),
            ("Quarantined", f"<b style='color:{bad_colour}'>{self.rows_quarantined:,}</b> rows"
             + (f" → <code>{html.escape(self.quarantine_at)}</code>" if self.rows_quarantined else "")),
        ]  # fmt: skip
        if self.resumed:
            rows.append(("Resumed", f"{self.rows_skipped:,} rows were done by an earlier run and kept"))
        if self.retries:
            rows.append(("Retries", f"{self.retries} requests waited for the service"))
        if self.marked_for_monitor:
            rows.append(("Monitor", f"{self.marked_for_monitor} requests marked as batch in the request log"))
        body = "".join(
            f"<tr><th style='text-align:left;padding-right:1em;vertical-align:top'>{k}</th><td>{v}</td></tr>"
            for k, v in rows
        )
        return (
            "<div class='nbdeploy-card nbdeploy-batch' style='border:1px solid #d0d7de;border-radius:6px;"
            "padding:8px 12px;max-width:900px'><div style='font-size:1.1em'><b>Batch scoring</b></div>"
            f"<table>{body}</table></div>"
        )

    def __str__(self) -> str:
        return (
            f"{self.deployment}: {self.rows_scored:,} rows scored, {self.rows_quarantined:,} quarantined"
            f"{f', {self.rows_skipped:,} done before' if self.resumed else ''} in {self.seconds:.1f} s"
            f" ({self.rows_per_s:,.0f} rows/s) → {self.destination}"
        )
