"""What a live panel keeps between refreshes, so a refresh reads only what the request log gained.

The request log is read by ``rowid`` past the last one seen; the reference sample, its statistics and the reference
side of the attribution are computed once per version; feedback is re-read only when its table changed; the drift
flags of the last judgement are kept for the rule's hysteresis, and every judgement's effect sizes for the
statistic-over-time chart.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from ..runtime.recorder import connect
from .attribution import ReferenceAttribution
from .drift import DriftThresholds, ReferenceStats
from .store import RequestLog, load_reference, parse_logged

__all__ = ["LogCache"]

HISTORY_POINTS = 240  # judgements kept for the statistic-over-time chart


@dataclass
class Judgement:
    at: float
    rows: int
    effect: dict[str, float]
    drifted: list[str]


@dataclass
class LogCache:
    """The request log of one version, read incrementally; the reference and its statistics, loaded once."""

    directory: Path
    schema: dict[str, Any]
    keep_rows: int = 5000
    rowid: int = 0
    meta: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["ts", "latency_ms", "status"]))
    blocks: deque[tuple[pd.DataFrame, list[Any]]] = field(default_factory=deque)
    block_rows: int = 0
    pending: list[tuple[str, str]] = field(default_factory=list)  # logged (inputs, outputs) not parsed yet
    reference: tuple[pd.DataFrame, np.ndarray] | None = None
    ref_stats: ReferenceStats | None = None
    ref_attribution: ReferenceAttribution | None = None
    loaded_reference: bool = False
    flags: set[str] = field(default_factory=set)
    history: deque[Judgement] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    feedback_key: tuple[int, int] = (-1, -1)
    client: httpx.Client | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _typed: pd.DataFrame | None = field(default=None, repr=False)  # ``meta`` typed, with its times
    _window: tuple[Any, pd.DataFrame, np.ndarray] | None = field(default=None, repr=False)  # the last ``rows``

    @property
    def reqlog(self) -> RequestLog:
        return RequestLog(self.directory)

    def http(self) -> httpx.Client:
        """One client for every scrape: a new connection per refresh costs the kernel more than the scrape."""
        if self.client is None:
            self.client = httpx.Client(timeout=3.0)
        return self.client

    def load_reference(self) -> tuple[pd.DataFrame, np.ndarray] | None:
        if not self.loaded_reference:
            self.reference = load_reference(self.directory)
            self.loaded_reference = True
            if self.reference is not None:
                self.ref_stats = ReferenceStats.build(self.reference[0])
        return self.reference

    def reference_attribution(self, labels: bool) -> ReferenceAttribution | None:
        """The reference side of ``monitor.attribution`` (bins and the mean prediction in each), built once."""
        reference = self.load_reference()
        if self.ref_attribution is None and reference is not None:
            self.ref_attribution = ReferenceAttribution.build(*reference, labels)
        return self.ref_attribution

    def update(self) -> int:
        """Read the requests logged since the last call; the new count."""
        path = self.reqlog.path
        if not path.exists():
            return 0
        con = connect(path, readonly=True)
        try:
            new = con.execute(
                "SELECT rowid, ts, latency_ms, status, inputs, outputs FROM requests WHERE rowid > ? ORDER BY rowid",
                (self.rowid,),
            ).fetchall()
        finally:
            con.close()
        if not new:
            return 0
        self.rowid = int(new[-1][0])
        meta = pd.DataFrame([r[1:4] for r in new], columns=["ts", "latency_ms", "status"])
        self.meta = meta if self.meta.empty else pd.concat([self.meta, meta], ignore_index=True)
        if self.schema:  # parsed when drift is judged next (every few refreshes), all at once
            self.pending.extend((i, o) for _, _, _, status, i, o in new if status == 200 and i and o)
            if len(self.pending) > self.keep_rows:
                del self.pending[: -self.keep_rows]
        return len(new)

    def _parse_pending(self) -> None:
        """The pending requests' rows, validated as one batch (``store.parse_logged``)."""
        pending, self.pending = self.pending, []
        frame, preds, _ = parse_logged(pending, self.schema)
        if not preds:
            return
        self.blocks.append((frame, preds))
        self.block_rows += len(preds)
        while len(self.blocks) > 1 and self.block_rows - len(self.blocks[0][1]) >= self.keep_rows:
            self.block_rows -= len(self.blocks.popleft()[1])

    def requests(self, since: float = 0.0) -> pd.DataFrame:
        """As ``RequestLog.requests`` (ts, latency_ms, status, time), from memory (typed once per new request)."""
        if self._typed is None or len(self._typed) != len(self.meta):
            typed = self.meta.astype({"ts": float, "latency_ms": float, "status": int})
            typed["time"] = pd.to_datetime(typed["ts"], unit="s", utc=True)
            self._typed = typed
        return self._typed[self._typed["ts"] >= since] if since else self._typed.copy()

    def rows(self, max_rows: int) -> tuple[pd.DataFrame, np.ndarray]:
        """The latest ``max_rows`` logged input rows and their predictions (the new blocks joined once)."""
        if self.pending:
            self._parse_pending()
        if not self.blocks:
            return pd.DataFrame(), np.array([])
        if len(self.blocks) > 1:
            frame = pd.concat([b for b, _ in self.blocks], ignore_index=True).iloc[-self.keep_rows :]
            preds = [p for _, out in self.blocks for p in out][-self.keep_rows :]
            self.blocks = deque([(frame.reset_index(drop=True), preds)])
            self.block_rows = len(preds)
        frame, out = self.blocks[0]
        key = (id(frame), len(out), max_rows)
        if self._window is None or self._window[0] != key:  # the drift and the attribution read the same rows
            self._window = (key, frame.iloc[-max_rows:].reset_index(drop=True), np.asarray(out[-max_rows:]))
        return self._window[1], self._window[2]

    def feedback_changed(self) -> bool:
        """Whether the feedback table changed since the last call (a cheap count instead of the join)."""
        path = self.reqlog.path
        if not path.exists():
            return False
        con = connect(path, readonly=True)
        try:
            key = tuple(con.execute("SELECT count(*), coalesce(max(rowid), 0) FROM feedback").fetchone())
        except Exception:  # no feedback table yet
            key = (0, 0)
        finally:
            con.close()
        changed = key != self.feedback_key
        self.feedback_key = (int(key[0]), int(key[1]))
        return changed

    def judged(self, at: float, rows: int, table: pd.DataFrame, t: DriftThresholds) -> None:
        """Keep a judgement for the hysteresis and the chart."""
        features = table.drop(index="prediction", errors="ignore")
        self.flags = {str(f) for f in table.index[table["drifted"]]}
        effect = {str(k): round(float(v), 4) for k, v in table["effect"].items() if v == v}
        self.history.append(Judgement(at, rows, effect, [str(f) for f in features.index[features["drifted"]]]))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
