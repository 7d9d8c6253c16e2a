"""Read a deployment's request log (written by the service's recorder) as pandas frames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..record import Info
from ..reference import REFERENCE, load_reference, save_reference
from ..runtime.recorder import DB_NAME, connect
from ..runtime.redact import Redactor
from ..runtime.schema import InputError, to_model_input


def parse_logged(pairs: list[tuple[Any, Any]], schema: dict[str, Any]) -> tuple[pd.DataFrame, list[Any], list[int]]:
    """Logged requests' ``(inputs, outputs)`` JSON as the model saw them: their input rows as one frame, the
    predictions, and each request's row count in them (0: refused by the schema, unreadable, or outputs that are not
    a list), in the requests' order. Records of many requests are validated as one batch (one call, not one each);
    if one of them is bad, they are validated one by one."""
    loaded: list[tuple[Any, Any]] = []
    for inputs, outputs in pairs:
        try:
            loaded.append((json.loads(inputs), json.loads(outputs)))
        except (TypeError, ValueError):
            loaded.append((None, None))
    counts = [0] * len(loaded)
    pieces: dict[int, tuple[pd.DataFrame, list[Any]]] = {}
    records = [
        i for i, (value, out) in enumerate(loaded)
        if isinstance(out, list) and isinstance(value, list) and value and len(value) == len(out)
        and all(isinstance(r, dict) for r in value)
    ]  # fmt: skip
    batched = set(records)
    alone = [i for i, (_, out) in enumerate(loaded) if isinstance(out, list) and i not in batched]
    if records:
        try:
            rows = _frame(to_model_input([r for i in records for r in loaded[i][0]], schema))
        except (InputError, ValueError, TypeError):
            alone = sorted(alone + records)
        else:
            if not alone:  # the common case: every request's records, in order, validated at once
                for i in records:
                    counts[i] = len(loaded[i][1])
                return rows, [p for i in records for p in loaded[i][1]], counts
            start = 0
            for i in records:
                n = len(loaded[i][1])
                pieces[i] = (rows.iloc[start : start + n], loaded[i][1])
                start += n
    for i in alone:
        value, out = loaded[i]
        try:
            rows = _frame(to_model_input(value, schema))
        except (InputError, ValueError, TypeError):
            continue
        n = min(len(rows), len(out))
        pieces[i] = (rows.iloc[:n], out[:n])
    ordered = [pieces[i] for i in sorted(pieces)]
    for i in pieces:
        counts[i] = len(pieces[i][1])
    if not ordered:
        return pd.DataFrame(), [], counts
    frame = pd.concat([f for f, _ in ordered], ignore_index=True) if len(ordered) > 1 else ordered[0][0]
    return frame.reset_index(drop=True), [p for _, out in ordered for p in out], counts


def _frame(rows: Any) -> pd.DataFrame:
    return pd.DataFrame(rows) if isinstance(rows, np.ndarray) else rows


class RequestLog:
    """Read-only view of ``requests.db`` in a deployment's data folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame()
        con = connect(self.path, readonly=True)
        try:
            return pd.read_sql_query(sql, con, params=args)
        finally:
            con.close()

    def _has_column(self, column: str) -> bool:
        """Whether the log's ``requests`` table has ``column`` (a log written before it was added has not)."""
        if not self.path.exists():
            return False
        return column in set(self._query("SELECT name FROM pragma_table_info('requests')").get("name", []))

    def requests(self, since: float = 0.0) -> pd.DataFrame:
        """One row per recorded request: id, time, latency, status, rows."""
        frame = self._query(
            "SELECT request_id, ts, latency_ms, status, n_rows, error FROM requests WHERE ts >= ? ORDER BY ts",
            (since,),
        )
        if frame.empty:
            return pd.DataFrame(columns=["request_id", "ts", "latency_ms", "status", "n_rows", "error", "time"])
        frame["time"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
        return frame

    def window(self, after: float, until: float | None = None, limit: int | None = None) -> pd.DataFrame:
        """Every logged request with ``after < ts <= until`` (oldest first, at most ``limit``): status, latency,
        the JSON of inputs, outputs and scores, and the latest ground truth sent for it (``y_true``, or None)."""
        scores = "r.scores" if self._has_column("scores") else "NULL"
        sql = (
            f"SELECT r.request_id, r.ts, r.latency_ms, r.status, r.n_rows, r.inputs, r.outputs, {scores} AS scores,"
            " (SELECT f.y_true FROM feedback f WHERE f.request_id = r.request_id ORDER BY f.ts DESC LIMIT 1)"
            " AS y_true FROM requests r WHERE r.ts > ?"
        )
        args: tuple[Any, ...] = (after,)
        if until is not None:
            sql, args = sql + " AND r.ts <= ?", (*args, until)
        sql += " ORDER BY r.ts"
        if limit is not None:
            sql, args = sql + " LIMIT ?", (*args, int(limit))
        return self._query(sql, args)

    def recent_rows(self, schema: dict[str, Any], max_rows: int = 5000) -> tuple[pd.DataFrame, np.ndarray]:
        """The latest successful requests' input rows (as the model saw them) and their predictions."""
        frame = self._query(
            "SELECT inputs, outputs FROM requests WHERE status = 200 ORDER BY ts DESC LIMIT ?", (max_rows,)
        )
        pairs = list(frame.itertuples(index=False, name=None)) if not frame.empty else []
        blocks: list[tuple[pd.DataFrame, list[Any]]] = []  # newest first
        total = 0
        for start in range(0, len(pairs), 500):  # newest first, a few hundred requests at a time, until enough rows
            rows, preds, _ = parse_logged(pairs[start : start + 500][::-1], schema)
            blocks.append((rows, preds))
            total += len(preds)
            if total >= max_rows:
                break
        blocks = [b for b in blocks if len(b[1])]
        if not blocks:
            return pd.DataFrame(), np.array([])
        blocks.reverse()
        data = pd.concat([b[0] for b in blocks], ignore_index=True) if len(blocks) > 1 else blocks[0][0]
        return data, np.asarray([p for b in blocks for p in b[1]])

    def feedback(self) -> pd.DataFrame:
        """Predictions joined with ground truth, one row per labelled row: time, y_pred, y_true."""
        frame = self._query(
            "SELECT r.ts AS ts, r.outputs AS outputs, f.y_true AS y_true, f.ts AS feedback_ts"
            " FROM feedback f JOIN requests r ON r.request_id = f.request_id ORDER BY r.ts"
        )
        rows: list[dict[str, Any]] = []
        for ts, outputs, y_true in zip(
            frame.get("ts", []), frame.get("outputs", []), frame.get("y_true", []), strict=False
        ):
            preds, truth = json.loads(outputs), json.loads(y_true)
            if not isinstance(preds, list):  # scores whose classes could not be told (no classes_)
                continue
            truth = truth if isinstance(truth, list) else [truth]
            rows.extend({"ts": ts, "y_pred": p, "y_true": t} for p, t in zip(preds, truth, strict=False))
        out = pd.DataFrame(rows, columns=["ts", "y_pred", "y_true"])
        out["time"] = pd.to_datetime(out["ts"], unit="s", utc=True)
        return out

    def scored(self, method: str = "predict_proba") -> tuple[pd.DataFrame, np.ndarray, list[Any]]:
        """Logged ``method`` answers joined with ground truth, one row per labelled row: the frame (ts, y_true,
        time), the scores (rows x classes) and the classes, the latest requests' (rows of other classes are left
        out: one version has one set)."""
        empty = pd.DataFrame(columns=["ts", "y_true", "time"])
        if not self._has_column("scores"):
            return empty, np.empty((0, 0)), []
        frame = self._query(
            "SELECT r.ts AS ts, r.scores AS scores, f.y_true AS y_true FROM feedback f"
            " JOIN requests r ON r.request_id = f.request_id WHERE r.scores IS NOT NULL ORDER BY r.ts"
        )
        classes: list[Any] | None = None
        blocks: list[tuple[float, list[Any], list[Any]]] = []  # per request, the latest first
        for ts, scores, y_true in reversed(list(frame.itertuples(index=False, name=None))):
            record, truth = json.loads(scores), json.loads(y_true)
            if not isinstance(record, dict) or record.get("method") != method or not record.get("classes"):
                continue
            if classes is None:
                classes = record["classes"]
            values = record.get("values")
            if record["classes"] != classes or not isinstance(values, list):
                continue
            truth = truth if isinstance(truth, list) else [truth]
            n = min(len(values), len(truth))
            blocks.append((ts, truth[:n], values[:n]))
        if classes is None or not blocks:
            return empty, np.empty((0, 0)), []
        blocks.reverse()
        arr = np.asarray([_floats(row) for _, _, values in blocks for row in values], dtype=float)
        out = pd.DataFrame(
            {
                "ts": [ts for ts, truth, _ in blocks for _ in truth],
                "y_true": [y for _, truth, _ in blocks for y in truth],
            }
        )
        out["time"] = pd.to_datetime(out["ts"], unit="s", utc=True)
        return out, arr, list(classes)


def _floats(row: Any) -> Any:
    """A logged score row with JSON's nulls (NaN in the answer) back as NaN."""
    if isinstance(row, list):
        return [np.nan if v is None else v for v in row]
    return np.nan if row is None else row


def logged_schema(info: Info) -> dict[str, Any]:
    """The schema of what the request log holds for a version: redacted columns dropped or hashed."""
    return Redactor(info.redact).schema(info.schema)


def accuracy_over_time(joined: pd.DataFrame, freq: str = "1min") -> pd.DataFrame:
    """Accuracy (labels) or mean absolute error (numbers) per time bucket, with counts."""
    if joined.empty:
        return pd.DataFrame(columns=["metric", "value", "n"])
    numeric = pd.api.types.is_float_dtype(pd.Series(joined["y_true"]).infer_objects())
    series = joined.set_index("time")
    if numeric:
        err = (pd.to_numeric(series["y_pred"]) - pd.to_numeric(series["y_true"])).abs()
        grouped = err.resample(freq).agg(["mean", "count"])
        metric = "mae"
    else:
        hit = (series["y_pred"].astype(str) == series["y_true"].astype(str)).astype(float)
        grouped = hit.resample(freq).agg(["mean", "count"])
        metric = "accuracy"
    grouped = grouped[grouped["count"] > 0]
    return pd.DataFrame({"metric": metric, "value": grouped["mean"], "n": grouped["count"].astype(int)})


__all__ = [
    "REFERENCE", "RequestLog", "accuracy_over_time", "load_reference", "logged_schema", "parse_logged",
    "save_reference",
]  # fmt: skip
