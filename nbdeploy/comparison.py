"""Compare the live version of a name with its candidate, and decide a promotion on evidence.

Two kinds of evidence, by how the candidate gets traffic (``router.contract.Candidate.mode``):

- **shadow** (paired): the router sends the candidate a copy of live requests and stores both answers by the live
  request id (``endpoint.db``, table ``mirrored``). Both versions answered the *same* rows, so they are compared
  row by row: agreement, the class-flip matrix (or the distribution of differences for numbers), the disagreeing
  rows themselves, and, where feedback labelled a row (``feedback`` of the live version's request log, by request
  id), which one was right. Labels are tested *paired*: the exact McNemar test (a binomial test on the discordant
  pairs, the rows only one version got right) for classes; the Wilcoxon signed-rank test on the two absolute
  errors for numbers. Pairing removes the rows' own difficulty from the comparison, so far fewer labels are needed
  than for two independent samples.
- **split** (unpaired): each version answered different callers. Each version's own request log is read; accuracy
  is tested with Fisher's exact test on the 2x2 table of right/wrong (Mann-Whitney U on absolute errors for
  numbers), stated as unpaired. There is no agreement to measure: only a labelled win can promote.

Latency and errors come from the router (``mirrored`` in shadow mode, ``served`` in split mode; the versions' own
request logs when the router has stored nothing). ``PromotionRules`` are plain fields a user reads and sets;
``check_rules`` says, per rule, what was observed against what threshold, in a sentence; ``gate`` is what
``Deployment.promote`` calls.
"""

from __future__ import annotations

import html
import json
import math
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from . import config
from .errors import UsageError
from .monitor.drift import COLUMNS as DRIFT_COLUMNS
from .monitor.drift import compute as drift_compute
from .monitor.store import RequestLog, load_reference
from .router.contract import ENDPOINT_FILE, MODEL_PATHS, STORE_FILE, Endpoint, read
from .runtime.recorder import connect, predicted_labels

__all__ = [
    "Comparer",
    "Comparison",
    "PromotionRules",
    "RuleResult",
    "as_rules",
    "check_rules",
    "compare",
    "explain",
    "gate",
]

SHADOW, SPLIT = "shadow", "split"
CLASSES, NUMBERS = "classes", "numbers"
#: The most mirrored rows (shadow) or served requests (split) one comparison reads: the latest ones.
MAX_ROWS = 50_000
#: Time buckets of ``agreement_over_time`` (seconds), the smallest giving at most ``MAX_BUCKETS`` of them.
BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
MAX_BUCKETS = 60
#: Numbers whose values are all whole and take at most this many values are classes (a classifier on 0/1 floats).
MAX_NUMERIC_CLASSES = 20
LATENCY_COLUMNS = ["requests", "answered", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "mean_ms"]
OVER_TIME_COLUMNS = ["requests", "rows", "agreement", "live_p95_ms", "candidate_p95_ms", "live_errors",
                     "candidate_errors"]  # fmt: skip
DISAGREEMENTS_SHOWN = 10


# ---------------------------------------------------------------------------------------------- answers


def answers(body: str | None) -> list[Any] | None:
    """The per-row answers in a service's JSON body: its predictions, or the class each row's probabilities (or
    decision values) pick, as the request log keeps them. None when there are none (an error, a body cut at 64 KB)."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("predictions"), list):
        return list(data["predictions"])
    for key, method in (("probabilities", "predict_proba"), ("scores", "decision_function")):
        if key in data:
            return predicted_labels(method, data[key], data.get("classes"))
    return None


def input_rows(text: str | None, n: int) -> list[dict[str, Any]]:
    """A request body's ``n`` rows as dicts (records or split form); empty dicts where they cannot be told."""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    inputs = body.get("inputs") if isinstance(body, dict) else None
    rows: list[dict[str, Any]] = []
    if isinstance(inputs, dict) and isinstance(inputs.get("data"), list) and isinstance(inputs.get("columns"), list):
        cols = [str(c) for c in inputs["columns"]]
        rows = [dict(zip(cols, r, strict=False)) if isinstance(r, list) else {} for r in inputs["data"]]
    elif isinstance(inputs, list):
        rows = [r if isinstance(r, dict) else {"input": r} for r in inputs]
    elif isinstance(inputs, dict):
        rows = [inputs]
    return (rows + [{} for _ in range(n)])[:n]


def label_key(value: Any) -> str:
    """A class as text that matches across JSON's ways of writing it: 1, 1.0 and "1" are one class."""
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def kind_of(values: list[Any]) -> str:
    """ "numbers" when the answers are floats taking many or fractional values (a regressor), else "classes"."""
    present = [v for v in values if v is not None]
    if not any(isinstance(v, (float, np.floating)) for v in present):
        return CLASSES
    if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in present):
        return CLASSES
    whole = all(math.isfinite(float(v)) and float(v).is_integer() for v in present)
    return CLASSES if whole and len(set(map(float, present))) <= MAX_NUMERIC_CLASSES else NUMBERS


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _close(a: Any, b: Any, tolerance: float) -> bool:
    """Two numbers agree when they differ by at most ``tolerance`` relative to the larger (or to 1 near zero)."""
    x, y = _float(a), _float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return abs(x - y) <= tolerance * max(abs(x), abs(y), 1.0)


def _since(value: Any) -> float:
    """Epoch seconds from a number, a datetime or Timestamp, a string pandas reads, or a timedelta (that long ago)."""
    if value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (timedelta, pd.Timedelta)):
        return time.time() - pd.Timedelta(value).total_seconds()
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(datetime.now().astimezone().tzinfo)
    return float(stamp.timestamp())


# ---------------------------------------------------------------------------------------------- statistics


@dataclass
class Labelled:
    """The labelled comparison: each version's accuracy (classes) or mean absolute error (numbers), the test."""

    rows: int = 0
    live_rows: int = 0  # split: labelled rows per version; shadow: both equal ``rows``
    candidate_rows: int = 0
    metric: str = "accuracy"  # "accuracy" | "mae"
    live: float | None = None
    candidate: float | None = None
    test: str = ""
    p_value: float | None = None
    paired: bool = True
    live_only_right: int = 0  # McNemar's discordant pairs (shadow, classes)
    candidate_only_right: int = 0

    @property
    def difference(self) -> float | None:
        """Candidate minus live (accuracy: more is better; MAE: less is better)."""
        return None if self.live is None or self.candidate is None else self.candidate - self.live

    @property
    def better(self) -> str | None:
        """ "candidate" or "live" by the metric (ties: None); not a judgement of significance."""
        d = self.difference
        if d is None or d == 0:
            return None
        gain = d if self.metric == "accuracy" else -d
        return "candidate" if gain > 0 else "live"

    def significant(self, alpha: float) -> str | None:
        """The version significantly better at ``alpha``, else None."""
        if self.p_value is None or not self.p_value < alpha:
            return None
        return self.better


def mcnemar_exact(live_right: np.ndarray, candidate_right: np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar: of the rows only one version got right, is the split 50/50? A two-sided binomial test."""
    b = int(np.sum(live_right & ~candidate_right))
    c = int(np.sum(~live_right & candidate_right))
    p = float(stats.binomtest(c, b + c, 0.5).pvalue) if b + c else 1.0
    return b, c, p


def wilcoxon_paired(live_abs: np.ndarray, candidate_abs: np.ndarray) -> float:
    """Wilcoxon signed-rank on the paired absolute errors (rows where they are equal drop out); 1.0 if all equal."""
    if not len(live_abs) or np.allclose(live_abs, candidate_abs, rtol=0, atol=0):
        return 1.0
    return float(stats.wilcoxon(live_abs, candidate_abs, zero_method="wilcox").pvalue)


def paired_labels(live: list[Any], candidate: list[Any], truth: list[Any], kind: str) -> Labelled:
    """Shadow mode: both versions' answers on the same labelled rows."""
    out = Labelled(rows=len(truth), live_rows=len(truth), candidate_rows=len(truth), paired=True)
    if not truth:
        return out
    if kind == NUMBERS:
        y = np.asarray([_float(t) for t in truth])
        e_live = np.abs(np.asarray([_float(v) for v in live]) - y)
        e_cand = np.abs(np.asarray([_float(v) for v in candidate]) - y)
        ok = ~(np.isnan(e_live) | np.isnan(e_cand))
        e_live, e_cand = e_live[ok], e_cand[ok]
        out.rows = out.live_rows = out.candidate_rows = int(ok.sum())
        out.metric, out.test = "mae", "Wilcoxon signed-rank"
        if out.rows:
            out.live, out.candidate = float(e_live.mean()), float(e_cand.mean())
            out.p_value = wilcoxon_paired(e_live, e_cand)
        return out
    keys = [label_key(t) for t in truth]
    live_right = np.asarray([label_key(v) == k for v, k in zip(live, keys, strict=True)])
    cand_right = np.asarray([label_key(v) == k for v, k in zip(candidate, keys, strict=True)])
    out.metric, out.test = "accuracy", "McNemar exact"
    out.live, out.candidate = float(live_right.mean()), float(cand_right.mean())
    out.live_only_right, out.candidate_only_right, out.p_value = mcnemar_exact(live_right, cand_right)
    return out


def unpaired_labels(live: pd.DataFrame, candidate: pd.DataFrame, kind: str) -> Labelled:
    """Split mode: each version's own labelled rows (``RequestLog.feedback()`` frames), two independent samples."""
    out = Labelled(live_rows=len(live), candidate_rows=len(candidate), paired=False)
    out.rows = len(live) + len(candidate)
    if live.empty or candidate.empty:
        return out
    if kind == NUMBERS:
        e_live = pd.to_numeric(live["y_pred"], errors="coerce") - pd.to_numeric(live["y_true"], errors="coerce")
        e_cand = pd.to_numeric(candidate["y_pred"], errors="coerce") - pd.to_numeric(
            candidate["y_true"], errors="coerce"
        )
        a, b = e_live.abs().dropna().to_numpy(float), e_cand.abs().dropna().to_numpy(float)
        out.metric, out.test = "mae", "Mann-Whitney U"
        if len(a) and len(b):
            out.live, out.candidate = float(a.mean()), float(b.mean())
            out.p_value = float(stats.mannwhitneyu(a, b).pvalue) if (a != a[0]).any() or (b != a[0]).any() else 1.0
        return out

    def right(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray([label_key(p) == label_key(t) for p, t in zip(frame["y_pred"], frame["y_true"], strict=True)])

    r_live, r_cand = right(live), right(candidate)
    out.metric, out.test = "accuracy", "Fisher exact"
    out.live, out.candidate = float(r_live.mean()), float(r_cand.mean())
    table = [[int(r_cand.sum()), int((~r_cand).sum())], [int(r_live.sum()), int((~r_live).sum())]]
    out.p_value = float(stats.fisher_exact(table).pvalue)
    return out


# ---------------------------------------------------------------------------------------------- the comparison


@dataclass
class Comparison:
    """Two versions of ``name`` side by side: ``summary`` (the figures in a dict), the frames behind them, and the
    sentence that says it (``sentence()``; the card in a notebook, ``_repr_html_``)."""

    name: str
    champion: int  # the live version
    challenger: int  # the candidate
    mode: str  # "shadow" (paired on the same requests) or "split" (unpaired)
    kind: str  # "classes" or "numbers"
    summary: dict[str, Any]
    #: live class (rows) against candidate class (columns), counts of compared rows; empty for numbers
    flips: pd.DataFrame = field(repr=False)
    #: numbers: the distribution (count, mean, quantiles) of candidate - live and of its absolute value
    differences: pd.DataFrame = field(repr=False)
    #: one row per disagreeing row: request_id, row, ts, time, the inputs' columns, live, candidate, label
    disagreements: pd.DataFrame = field(repr=False)
    #: one row per labelled compared row (shadow) or labelled row of either version (split)
    labelled: pd.DataFrame = field(repr=False)
    #: one row per version: requests, answered, errors, error_rate, p50/p95/p99/mean latency (ms)
    latency: pd.DataFrame = field(repr=False)
    agreement_over_time: pd.DataFrame = field(repr=False)
    #: each version's predictions against its deploy-time reference (``monitor.drift`` columns)
    drift: pd.DataFrame = field(repr=False)
    bucket_s: int = 60
    at: float = field(default_factory=time.time)
    notes: list[str] = field(default_factory=list)

    @property
    def live_label(self) -> str:
        return f"live v{self.champion}"

    @property
    def candidate_label(self) -> str:
        return f"candidate v{self.challenger}"

    def sentence(self) -> str:
        """What the comparison says, in one sentence a person reads."""
        return _sentence(self)

    def check(self, rules: PromotionRules | Mapping[str, Any] | None = None) -> list[RuleResult]:
        return check_rules(self, rules)

    def _repr_html_(self) -> str:
        return card_html(self)

    def __repr__(self) -> str:
        return f"<Comparison {self.name} v{self.champion} vs v{self.challenger} ({self.mode}): {self.sentence()}>"


def _empty_frames() -> dict[str, pd.DataFrame]:
    return {
        "flips": pd.DataFrame(),
        "differences": pd.DataFrame(),
        "disagreements": pd.DataFrame(columns=["request_id", "row", "ts", "time", "live", "candidate", "label"]),
        "labelled": pd.DataFrame(columns=["request_id", "row", "ts", "live", "candidate", "label"]),
        "agreement_over_time": pd.DataFrame(columns=OVER_TIME_COLUMNS),
    }


@dataclass
class _Request:
    """One mirrored request as read from ``endpoint.db``, its answers parsed once."""

    request_id: str
    ts: float
    inputs: str | None
    live_status: int
    live_ms: float
    cand_status: int | None
    cand_ms: float | None
    live: list[Any] | None
    cand: list[Any] | None
    cand_error: str | None

    @property
    def comparable(self) -> bool:
        return self.live_status == 200 and self.cand_status == 200 and self.live is not None and self.cand is not None

    @property
    def mismatched(self) -> bool:
        """Both answered, readably, with different numbers of rows: the candidate's answer is unusable."""
        return self.comparable and len(self.live or []) != len(self.cand or [])


class Comparer:
    """Compares two versions of ``name``; keeps what it read of ``endpoint.db``, so calling ``compare()`` again
    (the live panel does, every few seconds) reads only the rows mirrored since, and parses each answer once.

    ``champion`` and ``challenger`` default to the endpoint's live version and its candidate; ``mode`` to the
    candidate's mode in ``endpoint.json`` (else "shadow" when mirrored rows exist for the pair, else "split").
    Two numeric answers agree when within ``tolerance``, relative. At most ``max_rows`` latest rows are kept.
    """

    def __init__(
        self,
        name: str,
        champion: int | None = None,
        challenger: int | None = None,
        *,
        mode: str | None = None,
        tolerance: float = 1e-6,
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.name = name
        self.directory = config.name_dir(name)
        self.store = self.directory / STORE_FILE
        endpoint = _endpoint(self.directory / ENDPOINT_FILE)
        cand = endpoint.candidate if endpoint else None
        if champion is None:
            champion = endpoint.live.version if endpoint and endpoint.live else None
        if challenger is None:
            challenger = cand.upstream.version if cand else None
        if champion is None or challenger is None:
            raise UsageError(
                f"'{name}' has no {'live version' if champion is None else 'candidate'} to compare",
                hint="deploy a candidate beside the live version (shadow or split), or pass champion= and challenger=",
            )
        if champion == challenger:
            raise UsageError(f"champion and challenger are both version {champion}: nothing to compare")
        self.champion, self.challenger = int(champion), int(challenger)
        if mode is None:
            if cand is not None and cand.upstream.version == self.challenger and cand.mode in (SHADOW, SPLIT):
                mode = cand.mode
            else:
                mode = SHADOW if self._has_mirrored() else SPLIT
        if mode not in (SHADOW, SPLIT):
            raise UsageError(f"mode must be 'shadow' or 'split', not {mode!r}")
        self.mode = mode
        self.tolerance = float(tolerance)
        self.max_rows = int(max_rows)
        self._requests: dict[str, _Request] = {}
        self._rows = 0
        self._after = 0  # the last rowid of ``mirrored`` read
        self._references: dict[int, tuple[pd.DataFrame, np.ndarray] | None] = {}

    # -- reading
    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.store.exists():
            return []
        con = connect(self.store, readonly=True)
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:  # the router has not created the table yet
            if "no such table" in str(exc):
                return []
            raise
        finally:
            con.close()

    def _has_mirrored(self) -> bool:
        return bool(
            self._query(
                "SELECT 1 FROM mirrored WHERE live_version=? AND cand_version=? LIMIT 1",
                (self.champion, self.challenger),
            )
        )

    def _read_mirrored(self) -> None:
        """Append the rows mirrored since the last read (the latest ``max_rows`` at most), oldest dropped."""
        rows = self._query(
            "SELECT rowid, request_id, ts, inputs, live_status, live_ms, live_body, cand_status, cand_ms, cand_body,"
            " cand_error FROM mirrored WHERE live_version=? AND cand_version=? AND rowid > ? ORDER BY rowid DESC"
            " LIMIT ?",
            (self.champion, self.challenger, self._after, self.max_rows),
        )
        for rowid, rid, ts, inputs, l_status, l_ms, l_body, c_status, c_ms, c_body, c_error in reversed(rows):
            self._after = max(self._after, int(rowid))
            old = self._requests.pop(rid, None)  # a row written again (INSERT OR REPLACE) replaces the old one
            if old is not None:
                self._rows -= len(old.live or []) or 1
            req = _Request(
                str(rid), float(ts), inputs, int(l_status), float(l_ms), None if c_status is None else int(c_status),
                None if c_ms is None else float(c_ms), answers(l_body), answers(c_body), c_error,
            )  # fmt: skip
            self._requests[req.request_id] = req
            self._rows += len(req.live or []) or 1
        while self._rows > self.max_rows and len(self._requests) > 1:
            oldest = next(iter(self._requests))
            self._rows -= len(self._requests.pop(oldest).live or []) or 1

    def _counters(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self._query("SELECT name, value FROM counters")}

    def _log(self, version: int) -> RequestLog:
        return RequestLog(config.deployment_dir(self.name, version))

    def _reference(self, version: int) -> tuple[pd.DataFrame, np.ndarray] | None:
        if version not in self._references:
            self._references[version] = load_reference(config.deployment_dir(self.name, version))
        return self._references[version]

    def _labels(self, since: float) -> dict[str, list[Any]]:
        """Feedback sent to the live version, by request id: the latest for an id sent twice."""
        frame = self._log(self.champion)._query(
            "SELECT request_id, y_true FROM feedback WHERE ts >= ? ORDER BY ts", (since,)
        )
        out: dict[str, list[Any]] = {}
        for rid, y_true in frame.itertuples(index=False, name=None) if not frame.empty else ():
            try:
                value = json.loads(y_true)
            except ValueError:
                continue
            out[str(rid)] = value if isinstance(value, list) else [value]
        return out

    # -- comparing
    def compare(self, since: Any = None) -> Comparison:
        """The comparison now, over requests at or after ``since`` (epoch seconds, a datetime, a timedelta ago)."""
        start = _since(since)
        return self._shadow(start) if self.mode == SHADOW else self._split(start)

    def _shadow(self, since: float) -> Comparison:
        self._read_mirrored()
        reqs = [r for r in self._requests.values() if r.ts >= since]
        notes: list[str] = []
        comparable = [r for r in reqs if r.comparable and not r.mismatched]
        # per compared row: request id, row, ts, live answer, candidate answer
        rid = [r.request_id for r in comparable for _ in r.live or []]
        row = [i for r in comparable for i in range(len(r.live or []))]
        ts = [r.ts for r in comparable for _ in r.live or []]
        live = [v for r in comparable for v in r.live or []]
        cand = [v for r in comparable for v in r.cand or []]
        kind = kind_of((live + cand)[:20_000])
        if kind == NUMBERS:
            agree = np.asarray([_close(a, b, self.tolerance) for a, b in zip(live, cand, strict=True)], dtype=bool)
        else:
            agree = np.asarray([label_key(a) == label_key(b) for a, b in zip(live, cand, strict=True)], dtype=bool)
        rows = pd.DataFrame({"request_id": rid, "row": row, "ts": ts, "live": live, "candidate": cand, "agree": agree})

        labels = self._labels(min((r.ts for r in reqs), default=since))
        truth = [labels[i][j] if i in labels and j < len(labels[i]) else None for i, j in zip(rid, row, strict=True)]
        rows["label"] = truth
        has_label = rows["label"].notna().to_numpy(bool) if len(rows) else np.zeros(0, bool)
        lab_rows = rows[has_label]
        lab = paired_labels(list(lab_rows["live"]), list(lab_rows["candidate"]), list(lab_rows["label"]), kind)
        labelled = lab_rows.drop(columns=["agree"]).reset_index(drop=True)

        unreadable = sum(1 for r in reqs if r.live_status == 200 and r.cand_status == 200 and not r.comparable)
        mismatched = sum(1 for r in reqs if r.mismatched)
        if unreadable:
            notes.append(f"{unreadable:,} answered requests could not be compared (an answer unreadable or cut)")
        if mismatched:
            notes.append(f"{mismatched:,} requests got a candidate answer with a different number of rows: errors")
        latency = _latency_table(
            self,
            live=[(r.live_status, r.live_ms) for r in reqs],
            candidate=[(r.cand_status if not r.mismatched else -1, r.cand_ms) for r in reqs],
        )
        counters = self._counters()
        frames = _empty_frames()
        frames["labelled"] = labelled
        if len(rows):
            frames["disagreements"] = self._disagreements(rows[~rows["agree"]], kind)
            if kind == NUMBERS:
                frames["differences"] = _differences(rows)
            else:
                frames["flips"] = _flips(rows, self.champion, self.challenger)
        req_frame = pd.DataFrame(
            {
                "ts": [r.ts for r in reqs],
                "live_ms": [r.live_ms if r.live_status == 200 else np.nan for r in reqs],
                "cand_ms": [r.cand_ms if r.cand_status == 200 and r.cand_ms is not None else np.nan for r in reqs],
                "live_error": [r.live_status != 200 for r in reqs],
                "cand_error": [r.cand_status != 200 or r.mismatched for r in reqs],
            }
        )
        over_time, bucket = _over_time(req_frame, rows)
        frames["agreement_over_time"] = over_time
        drift = self._drift(np.asarray(live, dtype=object), np.asarray(cand, dtype=object))
        summary = {
            "mode": SHADOW,
            "paired": True,
            "kind": kind,
            "champion": self.champion,
            "challenger": self.challenger,
            "requests": len(reqs),
            "requests_compared": len(comparable),
            "rows_compared": len(rows),
            "agreement": float(agree.mean()) if len(agree) else None,
            "disagreeing_rows": int((~agree).sum()),
            **_label_summary(lab),
            **_latency_summary(latency),
            "latency_source": "router (mirrored requests)",
            "mirror_dropped": counters.get("mirror_dropped"),
            "mirror_sent": counters.get("mirror_sent"),
            "not_comparable": unreadable,
        }
        return self._result(SHADOW, kind, summary, latency, drift, bucket, notes, frames)

    def _result(
        self,
        mode: str,
        kind: str,
        summary: dict[str, Any],
        latency: pd.DataFrame,
        drift: Any,
        bucket: Any,
        notes: list[str],
        frames: dict[str, pd.DataFrame],
    ) -> Comparison:
        """The Comparison of either mode, from its summary and frames."""
        return Comparison(
            self.name, self.champion, self.challenger, mode, kind, summary, latency=latency, drift=drift,
            bucket_s=bucket, notes=notes, flips=frames["flips"], differences=frames["differences"],
            disagreements=frames["disagreements"], labelled=frames["labelled"],
            agreement_over_time=frames["agreement_over_time"],
        )  # fmt: skip

    def _disagreements(self, rows: pd.DataFrame, kind: str) -> pd.DataFrame:
        """The disagreeing rows with the inputs that got them (parsed only for these requests)."""
        cols = ["request_id", "row", "ts", "time"]
        if rows.empty:
            return _empty_frames()["disagreements"]
        inputs: dict[str, list[dict[str, Any]]] = {}
        records = []
        for rid, i in zip(rows["request_id"], rows["row"], strict=True):
            req = self._requests[rid]
            if rid not in inputs:
                inputs[rid] = input_rows(req.inputs, len(req.live or []))
            records.append(inputs[rid][i])
        out = rows[["request_id", "row", "ts"]].reset_index(drop=True)
        out["time"] = pd.to_datetime(out["ts"], unit="s", utc=True)
        features = pd.DataFrame(records)
        taken = {*cols, "live", "candidate", "label", "difference"}
        features.columns = [f"input.{c}" if c in taken else c for c in features.columns]
        out = pd.concat([out, features], axis=1)
        out["live"] = rows["live"].to_numpy()
        out["candidate"] = rows["candidate"].to_numpy()
        if kind == NUMBERS:
            out["difference"] = [_float(c) - _float(v) for v, c in zip(out["live"], out["candidate"], strict=True)]
        out["label"] = rows["label"].to_numpy()
        return out

    def _split(self, since: float) -> Comparison:
        notes = ["split traffic: the versions answered different requests, so they are compared unpaired"]
        served = self._query(
            "SELECT ts, version, status, latency_ms FROM served WHERE version IN (?, ?) AND role IN"
            f" ('live', 'candidate') AND path IN ({', '.join('?' * len(MODEL_PATHS))}) AND ts >= ?"
            " ORDER BY ts DESC LIMIT ?",
            (self.champion, self.challenger, *MODEL_PATHS, since, self.max_rows),
        )
        if served:
            frame = pd.DataFrame(served, columns=["ts", "version", "status", "latency_ms"])
            source = "router (served requests)"
        else:
            parts = [self._log(v).requests(since).assign(version=v) for v in (self.champion, self.challenger)]
            frame = pd.concat([p[["ts", "version", "status", "latency_ms"]] for p in parts], ignore_index=True)
            source = "the versions' request logs (the router stored nothing)"
        by = {v: frame[frame["version"] == v] for v in (self.champion, self.challenger)}
        latency = _latency_table(
            self,
            live=list(zip(by[self.champion]["status"], by[self.champion]["latency_ms"], strict=True)),
            candidate=list(zip(by[self.challenger]["status"], by[self.challenger]["latency_ms"], strict=True)),
        )
        fb = {v: self._log(v).feedback() for v in (self.champion, self.challenger)}
        fb = {v: f[f["ts"] >= since] for v, f in fb.items()}
        preds = {v: self._predictions(v, since) for v in (self.champion, self.challenger)}
        kind = kind_of([*preds[self.champion][:10_000], *preds[self.challenger][:10_000]])
        lab = unpaired_labels(fb[self.champion], fb[self.challenger], kind)
        labelled = pd.concat(
            [f.assign(version=v) for v, f in fb.items() if not f.empty] or [pd.DataFrame()], ignore_index=True
        )
        req_frame = pd.DataFrame(
            {
                "ts": frame["ts"].astype(float),
                "live_ms": frame["latency_ms"].where((frame["version"] == self.champion) & (frame["status"] == 200)),
                "cand_ms": frame["latency_ms"].where((frame["version"] == self.challenger) & (frame["status"] == 200)),
                "live_error": (frame["version"] == self.champion) & (frame["status"] != 200),
                "cand_error": (frame["version"] == self.challenger) & (frame["status"] != 200),
            }
        )
        over_time, bucket = _over_time(req_frame, None)
        frames = _empty_frames()
        frames["labelled"] = labelled
        frames["agreement_over_time"] = over_time
        drift = self._drift(preds[self.champion], preds[self.challenger])
        summary = {
            "mode": SPLIT,
            "paired": False,
            "kind": kind,
            "champion": self.champion,
            "challenger": self.challenger,
            "requests": len(frame),
            "requests_compared": 0,
            "rows_compared": 0,
            "agreement": None,
            "disagreeing_rows": None,
            **_label_summary(lab),
            **_latency_summary(latency),
            "latency_source": source,
            "mirror_dropped": None,
            "mirror_sent": None,
            "not_comparable": 0,
        }
        return self._result(SPLIT, kind, summary, latency, drift, bucket, notes, frames)

    def _predictions(self, version: int, since: float) -> np.ndarray:
        """The version's latest logged predictions (one per row), for its prediction drift."""
        frame = self._log(version)._query(
            "SELECT outputs FROM requests WHERE status = 200 AND ts >= ? ORDER BY ts DESC LIMIT ?",
            (since, self.max_rows),
        )
        values: list[Any] = []
        for (text,) in frame.itertuples(index=False, name=None) if not frame.empty else ():
            out = json.loads(text) if text else None
            if isinstance(out, list):
                values.extend(out)
            if len(values) >= self.max_rows:
                break
        return np.asarray(values, dtype=object)

    def _drift(self, live: np.ndarray, candidate: np.ndarray) -> pd.DataFrame:
        """Each version's predictions against the predictions its deploy-time sample got (``monitor.drift``)."""
        out: dict[str, Any] = {}
        for label, version, preds in (
            (f"live v{self.champion}", self.champion, live),
            (f"candidate v{self.challenger}", self.challenger, candidate),
        ):
            ref = self._reference(version)
            if ref is None:
                out[label] = {**dict.fromkeys(DRIFT_COLUMNS, np.nan), "test": "no reference", "drifted": False}
                continue
            ref_inputs, ref_preds = ref
            current = _typed(preds)
            out[label] = drift_compute(ref_inputs.iloc[:, :0], pd.DataFrame(), ref_preds, current).loc["prediction"]
        frame = pd.DataFrame.from_dict(out, orient="index")
        return frame.reindex(columns=DRIFT_COLUMNS)


def _typed(values: np.ndarray) -> np.ndarray:
    """JSON's answers (an object array) typed as the reference's predictions are: numbers as numbers (so drift
    judges them as numbers), anything else as text."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        if len(present) < len(values) or any(isinstance(v, float) for v in present):
            return np.asarray([np.nan if v is None else v for v in values], dtype=float)
        return np.asarray(present, dtype=np.int64)
    return np.asarray([v if isinstance(v, str) else label_key(v) for v in values], dtype=object)


def _endpoint(path: Path) -> Endpoint | None:
    return read(path) if path.exists() else None


def _label_summary(lab: Labelled) -> dict[str, Any]:
    acc = lab.metric == "accuracy"
    return {
        "labelled_rows": lab.rows,
        "labelled_live_rows": lab.live_rows,
        "labelled_candidate_rows": lab.candidate_rows,
        "metric": lab.metric,
        "live_metric": lab.live,
        "candidate_metric": lab.candidate,
        "live_accuracy": lab.live if acc else None,
        "candidate_accuracy": lab.candidate if acc else None,
        "live_mae": None if acc else lab.live,
        "candidate_mae": None if acc else lab.candidate,
        "difference": lab.difference,
        "better": lab.better,
        "test": lab.test or None,
        "p_value": lab.p_value,
        "live_only_right": lab.live_only_right if lab.paired and acc else None,
        "candidate_only_right": lab.candidate_only_right if lab.paired and acc else None,
    }


def _labelled_from(summary: dict[str, Any]) -> Labelled:
    """The labelled part of a summary back as ``Labelled`` (rules and sentences read it)."""
    return Labelled(
        rows=summary["labelled_rows"],
        live_rows=summary["labelled_live_rows"],
        candidate_rows=summary["labelled_candidate_rows"],
        metric=summary["metric"],
        live=summary["live_metric"],
        candidate=summary["candidate_metric"],
        test=summary["test"] or "",
        p_value=summary["p_value"],
        paired=summary["paired"],
        live_only_right=summary["live_only_right"] or 0,
        candidate_only_right=summary["candidate_only_right"] or 0,
    )


def _latency_table(comparer: Comparer, live: list[tuple[Any, Any]], candidate: list[tuple[Any, Any]]) -> pd.DataFrame:
    """Per version: requests, answered (200), errors (anything else, no answer included), latency of answered."""
    out = {}
    for label, pairs in ((f"live v{comparer.champion}", live), (f"candidate v{comparer.challenger}", candidate)):
        ok = np.asarray([_float(ms) for s, ms in pairs if s == 200 and ms is not None], dtype=float)
        ok = ok[~np.isnan(ok)]
        n = len(pairs)
        errors = sum(1 for s, _ in pairs if s != 200)
        q = np.quantile(ok, [0.5, 0.95, 0.99]) if len(ok) else [np.nan] * 3
        out[label] = {
            "requests": n,
            "answered": n - errors,
            "errors": errors,
            "error_rate": errors / n if n else np.nan,
            "p50_ms": float(q[0]),
            "p95_ms": float(q[1]),
            "p99_ms": float(q[2]),
            "mean_ms": float(ok.mean()) if len(ok) else np.nan,
        }
    frame = pd.DataFrame.from_dict(out, orient="index")[LATENCY_COLUMNS]
    frame.index.name = "version"
    return frame


def _latency_summary(latency: pd.DataFrame) -> dict[str, Any]:
    live, cand = latency.iloc[0], latency.iloc[1]

    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    return {
        "live_requests": int(live["requests"]),
        "candidate_requests": int(cand["requests"]),
        "live_error_rate": num(live["error_rate"]),
        "candidate_error_rate": num(cand["error_rate"]),
        "live_p50_ms": num(live["p50_ms"]),
        "live_p95_ms": num(live["p95_ms"]),
        "candidate_p50_ms": num(cand["p50_ms"]),
        "candidate_p95_ms": num(cand["p95_ms"]),
    }


def _flips(rows: pd.DataFrame, champion: int, challenger: int) -> pd.DataFrame:
    """Counts of (live class, candidate class); the diagonal is agreement, the rest are flips."""
    live = rows["live"].map(label_key)
    cand = rows["candidate"].map(label_key)
    order = sorted(set(live) | set(cand), key=_class_order)
    table = pd.crosstab(live, cand).reindex(index=order, columns=order, fill_value=0)
    table.index.name, table.columns.name = f"live v{champion}", f"candidate v{challenger}"
    return table


def _class_order(c: str) -> tuple[int, float, str]:
    try:
        return (0, float(c), c)
    except ValueError:
        return (1, 0.0, c)


def _differences(rows: pd.DataFrame) -> pd.DataFrame:
    """The distribution of candidate - live (and of its size) over the compared rows."""
    d = pd.Series([_float(c) - _float(v) for v, c in zip(rows["live"], rows["candidate"], strict=True)])
    pct = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
    return pd.DataFrame({"candidate - live": d.describe(percentiles=pct), "|candidate - live|": d.abs().describe(
        percentiles=pct)})  # fmt: skip


def _bucket(span_s: float) -> int:
    return next((b for b in BUCKETS_S if span_s / b <= MAX_BUCKETS), BUCKETS_S[-1])


def _over_time(requests: pd.DataFrame, rows: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    """Per time bucket: requests, compared rows, agreement, each version's p95 latency and errors."""
    if requests.empty:
        return pd.DataFrame(columns=OVER_TIME_COLUMNS), 60
    bucket = _bucket(float(requests["ts"].max() - requests["ts"].min()))
    start = (requests["ts"] // bucket * bucket).astype(float)
    g = requests.assign(start=start).groupby("start")
    out = pd.DataFrame(
        {
            "requests": g.size(),
            "live_p95_ms": g["live_ms"].quantile(0.95),
            "candidate_p95_ms": g["cand_ms"].quantile(0.95),
            "live_errors": g["live_error"].sum().astype(int),
            "candidate_errors": g["cand_error"].sum().astype(int),
        }
    )
    if rows is not None and len(rows):
        r = rows.assign(start=(rows["ts"] // bucket * bucket).astype(float)).groupby("start")["agree"]
        out["rows"] = r.size().reindex(out.index, fill_value=0).astype(int)
        out["agreement"] = r.mean().reindex(out.index)
    else:
        out["rows"], out["agreement"] = 0, np.nan
    out.index = pd.to_datetime(out.index, unit="s", utc=True)
    out.index.name = "time"
    return out[OVER_TIME_COLUMNS], bucket


def compare(
    name: str,
    champion: int | None = None,
    challenger: int | None = None,
    since: Any = None,
    *,
    mode: str | None = None,
    tolerance: float = 1e-6,
    max_rows: int = MAX_ROWS,
) -> Comparison:
    """Compare the live version of ``name`` (``champion``) with its candidate (``challenger``): see ``Comparer``."""
    return Comparer(name, champion, challenger, mode=mode, tolerance=tolerance, max_rows=max_rows).compare(since)


# ---------------------------------------------------------------------------------------------- rules


@dataclass
class PromotionRules:
    """What a candidate must show before it takes the live traffic. Set a field to None to switch its rule off.

    - ``min_requests``: compared rows (shadow), or requests each version answered (split), before anything is
      decided.
    - ``min_agreement`` OR ``labelled_win``: the candidate answers as live does on this share of rows, or it is
      significantly better on labelled rows (p < ``alpha``; paired exact McNemar / Wilcoxon in shadow mode, Fisher
      exact / Mann-Whitney unpaired in split mode). In split mode there is no agreement: only a win promotes.
    - never significantly worse on labelled rows (p < ``alpha``), whatever the agreement.
    - ``max_error_rate_increase``: the candidate's error rate at most live's plus this (absolute), plus one
      request's worth (1 / requests) so that a single timeout in a small sample does not refuse on its own.
    - ``max_p95_latency_increase``: the candidate's p95 latency at most live's times (1 + this), plus
      ``latency_slack_ms`` (timer noise: a 2 ms model measured at 2.3 ms is no regression).
    - ``tolerance``: two numeric answers agree when they differ by at most this, relative.
    """

    min_requests: int | None = 100
    min_agreement: float | None = 0.99
    labelled_win: bool = True
    alpha: float = 0.05
    max_error_rate_increase: float | None = 0.0
    max_p95_latency_increase: float | None = 0.10
    latency_slack_ms: float = 5.0
    tolerance: float = 1e-6

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return "PromotionRules(" + ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)) + ")"


@dataclass
class RuleResult:
    """One rule's verdict: what was observed, against what threshold, said in a sentence."""

    name: str
    passed: bool
    observed: Any
    threshold: Any
    sentence: str

    def __str__(self) -> str:
        return f"{'passed' if self.passed else 'FAILED'} {self.name}: {self.sentence}"


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:.{digits}f} %"


def fmt_p(p: float | None) -> str:
    """A p-value as people write it: two significant digits, scientific below 0.001."""
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _ms(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.1f} ms"


def _labelled_words(lab: Labelled) -> str:
    """'on the 212 labelled ones it is right 4.0 points more often (McNemar exact p = 0.01)' and the like."""
    if lab.live is None or lab.candidate is None:
        return ""
    test = f"{lab.test} p = {fmt_p(lab.p_value)}{'' if lab.paired else ', unpaired'}"
    d = lab.difference or 0.0
    if lab.metric == "accuracy":
        if not lab.paired:
            return (
                f"on labelled rows the candidate is right {_pct(lab.candidate)} of {lab.candidate_rows:,} and live"
                f" {_pct(lab.live)} of {lab.live_rows:,} ({test})"
            )
        if d == 0:
            return f"on the {lab.rows:,} labelled ones both are right equally often ({_pct(lab.live)}; {test})"
        how = "more" if d > 0 else "less"
        return f"on the {lab.rows:,} labelled ones it is right {abs(d) * 100:.1f} points {how} often ({test})"
    where = f"on the {lab.rows:,} labelled ones" if lab.paired else "on labelled rows"
    if d == 0:
        return f"{where} both have the same mean absolute error, {lab.live:.4g} ({test})"
    how = "lower" if d < 0 else "higher"
    return f"{where} its mean absolute error is {abs(d):.4g} {how} ({lab.candidate:.4g} against {lab.live:.4g}; {test})"


def _sentence(c: Comparison) -> str:
    s = c.summary
    lab = _labelled_from(s)
    cand = f"the candidate (v{c.challenger})"
    if c.mode == SPLIT:
        head = (
            f"split traffic, unpaired: live v{c.champion} answered {s['live_requests']:,} requests and {cand}"
            f" {s['candidate_requests']:,}"
        )
        tail = _labelled_words(lab) or "no labelled rows yet (send feedback for requests each version answered)"
        return f"{head}; {tail}"
    n_rows, n_req = s["rows_compared"], s["requests_compared"]
    if not n_rows:
        return f"no mirrored requests compared yet between live v{c.champion} and {cand}"
    requests = f"{n_req:,} live request{'' if n_req == 1 else 's'}"
    of = requests if n_rows == n_req else f"{n_rows:,} rows in {requests}"
    agreement = s["agreement"]
    if agreement == 1.0:
        head = f"{cand} agrees with live v{c.champion} on all {of}"
    elif c.kind == NUMBERS:
        head = f"{cand} gives a different number on {_pct(1 - agreement)} of {of}"
    else:
        head = f"{cand} disagrees on {_pct(1 - agreement)} of {of}"
    tail = _labelled_words(lab) or "none is labelled yet (send feedback to the live version)"
    return f"{head}; {tail}"


def as_rules(rules: PromotionRules | Mapping[str, Any] | None) -> PromotionRules:
    """``PromotionRules`` from itself, a dict of some of its fields (the rest default), or None (the defaults)."""
    if rules is None:
        return PromotionRules()
    if isinstance(rules, PromotionRules):
        return rules
    known = {f.name for f in fields(PromotionRules)}
    unknown = sorted(set(rules) - known)
    if unknown:
        raise UsageError(
            f"unknown promotion rules: {', '.join(unknown)}", hint=f"the rules: {', '.join(sorted(known))}"
        )
    return PromotionRules(**rules)


def check_rules(comparison: Comparison, rules: PromotionRules | Mapping[str, Any] | None = None) -> list[RuleResult]:
    """Each rule's verdict on ``comparison`` (passed or not), in the order ``PromotionRules`` lists them."""
    r = as_rules(rules)
    s = comparison.summary
    lab = _labelled_from(s)
    shadow = comparison.mode == SHADOW
    out: list[RuleResult] = []

    # enough evidence
    n = s["rows_compared"] if shadow else min(s["live_requests"], s["candidate_requests"])
    what = "rows compared" if shadow else "requests answered by each version (the fewer)"
    if r.min_requests is None:
        out.append(RuleResult("min_requests", True, n, None, f"rule off ({n:,} {what})"))
    else:
        ok = n >= r.min_requests
        verb = "at least" if ok else "fewer than the"
        out.append(RuleResult("min_requests", ok, n, r.min_requests, f"{n:,} {what}: {verb} {r.min_requests:,}"))

    # agreement, or a significant win on labels
    winner = lab.significant(r.alpha)
    win = r.labelled_win and winner == "candidate"
    labels = _labelled_words(lab) or "no labelled rows"
    win_words = f"a significant win on labels (p < {r.alpha:g}): {labels}"
    agreement = s["agreement"]
    name = "min_agreement or labelled_win"
    if r.min_agreement is None and not r.labelled_win:
        out.append(RuleResult(name, True, agreement, None, "rule off"))
    else:
        agrees = r.min_agreement is not None and agreement is not None and agreement >= r.min_agreement
        parts = []
        if r.min_agreement is not None:
            seen = "no agreement (split traffic)" if agreement is None else f"agreement {_pct(agreement)}"
            parts.append(f"{seen} {'≥' if agrees else 'is below'} {_pct(r.min_agreement)}")
        if r.labelled_win:
            parts.append(("" if win else "no ") + win_words)
        joiner = "; " if agrees or win else ", and "
        threshold = {"min_agreement": r.min_agreement, "labelled_win": r.labelled_win, "alpha": r.alpha}
        observed = {"agreement": agreement, "p_value": lab.p_value, "better": lab.better}
        out.append(RuleResult(name, agrees or win, observed, threshold, joiner.join(parts)))

    # never significantly worse on labels
    worse = winner == "live"
    if lab.p_value is None:
        sentence = "no labelled rows to judge"
    else:
        sentence = f"{'significantly worse' if worse else 'not significantly worse'} at {r.alpha:g}: {labels}"
    out.append(RuleResult("not worse on labels", not worse, lab.p_value, r.alpha, sentence))

    # error rate
    live_e, cand_e = s["live_error_rate"], s["candidate_error_rate"]
    n_cand = s["candidate_requests"]
    if r.max_error_rate_increase is None:
        out.append(RuleResult("max_error_rate_increase", True, cand_e, None, "rule off"))
    elif cand_e is None or live_e is None or not n_cand:
        out.append(RuleResult("max_error_rate_increase", False, cand_e, None, "no requests to measure errors on"))
    else:
        allowed = live_e + r.max_error_rate_increase + 1.0 / n_cand
        ok = cand_e <= allowed + 1e-12
        sentence = (
            f"candidate error rate {_pct(cand_e, 2)} against live {_pct(live_e, 2)}: {'within' if ok else 'above'}"
            f" the allowed {_pct(allowed, 2)} (live + {r.max_error_rate_increase * 100:g} points + one request in"
            f" {n_cand:,})"
        )
        out.append(RuleResult("max_error_rate_increase", ok, cand_e, allowed, sentence))

    # p95 latency
    live_p, cand_p = s["live_p95_ms"], s["candidate_p95_ms"]
    if r.max_p95_latency_increase is None:
        out.append(RuleResult("max_p95_latency_increase", True, cand_p, None, "rule off"))
    elif live_p is None or cand_p is None:
        out.append(RuleResult("max_p95_latency_increase", False, cand_p, None, "no answered requests to time"))
    else:
        allowed = live_p * (1 + r.max_p95_latency_increase) + r.latency_slack_ms
        ok = cand_p <= allowed
        sentence = (
            f"candidate p95 {_ms(cand_p)} against live {_ms(live_p)}: {'within' if ok else 'above'} the allowed"
            f" {_ms(allowed)} (live + {r.max_p95_latency_increase * 100:g} % + {r.latency_slack_ms:g} ms)"
        )
        out.append(RuleResult("max_p95_latency_increase", ok, cand_p, allowed, sentence))
    return out


def explain(results: list[RuleResult], comparison: Comparison | None = None) -> str:
    """A promotion's verdict in words: each failed rule with its evidence (or that all passed)."""
    failed = [r for r in results if not r.passed]
    head = comparison.sentence() + "\n" if comparison is not None else ""
    if not failed:
        return f"{head}promotion allowed: all {len(results)} rules passed"
    lines = "\n".join(f"  - {r.name}: {r.sentence}" for r in failed)
    return f"{head}promotion refused: {len(failed)} of {len(results)} rules failed\n{lines}"


def gate(
    name: str,
    rules: PromotionRules | Mapping[str, Any] | None = None,
    *,
    champion: int | None = None,
    challenger: int | None = None,
    since: Any = None,
) -> tuple[bool, list[RuleResult], Comparison]:
    """Whether ``name``'s candidate may be promoted under ``rules``: (allowed, each rule's result, the evidence)."""
    r = as_rules(rules)
    comparison = compare(name, champion, challenger, since, tolerance=r.tolerance)
    results = check_rules(comparison, r)
    return all(x.passed for x in results), results, comparison


# ---------------------------------------------------------------------------------------------- the card (HTML)

_CELL = "padding:2px 8px;border-bottom:1px solid #eaeef2"
_MUTED = "#59636e"


def table_html(frame: pd.DataFrame, title: str = "", max_rows: int = DISAGREEMENTS_SHOWN, index: bool = True) -> str:
    """A compact HTML table (escaped), the first ``max_rows`` rows, with a line saying how many were left out."""
    if frame.empty:
        return ""
    shown = frame.head(max_rows)
    head_cells = ([str(shown.index.name or "")] if index else []) + [str(c) for c in shown.columns]
    th = "".join(f"<th style='{_CELL};text-align:right'>{html.escape(h)}</th>" for h in head_cells)
    body = []
    for key, row in shown.iterrows():
        cells = ([_cell(key)] if index else []) + [_cell(v) for v in row.tolist()]
        body.append("<tr>" + "".join(f"<td style='{_CELL};text-align:right'>{html.escape(c)}</td>" for c in cells))
    more = len(frame) - len(shown)
    left = f"<div style='color:{_MUTED};font-size:11px'>… and {more:,} more</div>" if more > 0 else ""
    caption = (
        f"<div style='font-size:13px;font-weight:600;margin:6px 0 2px'>{html.escape(title)}</div>" if title else ""
    )
    return (
        f"<div>{caption}<table style='border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums'>"
        f"<thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>{left}</div>"
    )


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, pd.Timestamp):
        return v.tz_convert(datetime.now().astimezone().tzinfo).strftime("%H:%M:%S") if v.tzinfo else str(v)
    if isinstance(v, (float, np.floating)):
        return f"{v:,.4g}"
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "…"


def latency_display(c: Comparison) -> pd.DataFrame:
    """The latency table as people read it: error rate in %, ms rounded."""
    t = c.latency.copy()
    t["error_rate"] = [_pct(v, 2) for v in t["error_rate"]]
    for col in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"):
        t[col] = [_ms(v) for v in t[col]]
    return t.rename(columns={"error_rate": "error rate", "p50_ms": "p50", "p95_ms": "p95", "p99_ms": "p99",
                             "mean_ms": "mean"})  # fmt: skip


def disagreements_display(c: Comparison, n: int = DISAGREEMENTS_SHOWN) -> pd.DataFrame:
    """The first disagreeing rows without the raw epoch column."""
    d = c.disagreements.drop(columns=["ts"], errors="ignore")
    return d.head(n).set_index("request_id") if not d.empty else d


def card_html(c: Comparison, rules: list[RuleResult] | None = None) -> str:
    """The comparison as a compact card: the sentence, the flip matrix (or differences), latency and errors side by
    side, the first disagreeing requests, and with ``rules`` each rule's verdict."""
    mode = "shadow, paired on the same requests" if c.mode == SHADOW else "split, unpaired"
    head = (
        f"<div style='font-size:15px'><b>{html.escape(c.name)}</b> &middot; live v{c.champion} against candidate"
        f" v{c.challenger} <span style='color:{_MUTED}'>({mode})</span></div>"
    )
    sentence = f"<div class='nbdeploy-sentence' style='font-size:14px;margin:6px 0'>{html.escape(c.sentence())}</div>"
    if c.kind == NUMBERS:
        left = table_html(c.differences, "Differences (candidate - live)", max_rows=20)
    else:
        left = table_html(c.flips, "Flips: live class (rows) → candidate class (columns)", max_rows=20)
    right = table_html(latency_display(c), f"Latency and errors ({c.summary['latency_source']})")
    row = f"<div style='display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start'>{left}{right}</div>"
    n_dis = len(c.disagreements)
    dis = table_html(disagreements_display(c), f"Disagreeing rows ({n_dis:,})") if n_dis else ""
    verdict = ""
    if rules is not None:
        items = "".join(
            f"<li style='color:{'#1a7f37' if r.passed else '#cf222e'}'><b>{html.escape(r.name)}</b>: "
            f"{html.escape(r.sentence)}</li>"
            for r in rules
        )
        verdict = f"<ul style='font-size:12px;margin:6px 0;padding-left:18px'>{items}</ul>"
    notes = "".join(f"<div style='color:{_MUTED};font-size:11px'>{html.escape(n)}</div>" for n in c.notes)
    return (
        "<div class='nbdeploy-comparison' style='font-family:system-ui,sans-serif;max-width:1080px'>"
        f"{head}{sentence}{verdict}{row}{dis}{notes}</div>"
    )
