"""Check ground truth before it is stored: only for requests this service answered, one label per row.

Without this, ``/feedback`` stored anything: labels for ids nobody was given, or 100,000 labels for a one-row
request, which then skewed accuracy and grew the log without bound.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .recorder import connect
from .schema import InputError, shown

#: The longest label kept (labels are classes or numbers; a longer string is not a label).
MAX_LABEL_CHARS = 1000


class Answered:
    """Ids of answered requests and their row counts: the latest few in memory (the log commits them a moment
    later), the rest from the request log. A small memory, so serving many requests does not grow the worker."""

    def __init__(
        self,
        log_path: Path | None,
        kept: int = 4096,
        flush: Callable[[], object] = lambda: None,
        others_s: float = 0.0,
    ) -> None:
        self.log_path = log_path
        self.kept = kept
        self.flush = flush
        #: With several workers, another one may have answered the request and not yet committed it: how long to
        #: look for it in the log (its recorder commits within a fraction of a second).
        self.others_s = others_s
        self._recent: OrderedDict[str, int] = OrderedDict()

    def remember(self, request_id: str, rows: int) -> None:
        self._recent[request_id] = rows
        if len(self._recent) > self.kept:
            self._recent.popitem(last=False)

    def rows(self, request_id: str) -> int | None:
        """Rows of an answered (200) request, or None if this service never answered it."""
        if request_id in self._recent:
            return self._recent[request_id]
        found = self._logged(request_id)
        if found is None and self.log_path is not None:
            self.flush()  # answered a moment ago, still in the recorder's queue
            found = self._logged(request_id)
            end = time.monotonic() + self.others_s
            while found is None and time.monotonic() < end:  # or in another worker's
                time.sleep(0.05)
                found = self._logged(request_id)
        return found

    def _logged(self, request_id: str) -> int | None:
        if self.log_path is None or not self.log_path.exists():
            return None
        con = connect(self.log_path, readonly=True)
        try:
            row = con.execute("SELECT n_rows FROM requests WHERE request_id=? AND status=200", (request_id,)).fetchone()
        except sqlite3.Error:
            return None
        finally:
            con.close()
        return int(row[0]) if row else None


def _labels(i: int, y_true: Any, rows: int) -> list[Any]:
    labels = y_true if isinstance(y_true, list) else [y_true]
    if len(labels) != rows:
        raise InputError(f"item {i}: {len(labels)} labels for a request of {rows} rows")
    for label in labels:
        if isinstance(label, (dict, list)) or (isinstance(label, str) and len(label) > MAX_LABEL_CHARS):
            raise InputError(f"item {i}: {shown(label)} is not a label (a class or a number)")
    return labels


def checked(items: Any, answered: Answered, max_items: int) -> list[tuple[str, list[Any]]]:
    """``(request_id, labels)`` pairs, or InputError naming the first bad item; nothing is stored unless all pass."""
    if not isinstance(items, list):
        raise InputError("'items' must be a list of {'request_id': ..., 'y_true': [...]}")
    if len(items) > max_items:
        raise InputError(f"{len(items)} items in one call; the limit is {max_items}: send them in parts")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("request_id"), str) or "y_true" not in item:
            raise InputError(f"item {i}: needs 'request_id' (a string) and 'y_true'")
        rid = item["request_id"]
        rows = answered.rows(rid)
        if rows is None:
            raise InputError(f"item {i}: no answered request has the id {shown(rid)}")
        out.append((rid, _labels(i, item["y_true"], rows)))
    return out
