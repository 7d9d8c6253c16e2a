"""One batch job: read chunks, score several at once, commit each in order, count, show progress.

Memory is bounded by the chunk size, whatever the source: one chunk being read, ``in_flight`` chunks at the service,
one being written. Chunks are committed in the order they were read (so a file keeps the source's order), each in
its own transaction; an interrupted job (Ctrl-C, a killed process, a service that stays away) leaves only whole
chunks behind, and the same call resumes it, skipping the keys already there.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import PredictionError, UsageError
from . import validate
from .checkpoint import DuplicateKey
from .monitor import Marker
from .progress import Bar
from .quarantine import BadRow, bad_row
from .sinks import Sink
from .sources import Source
from .summary import BatchResult
from .transport import Transport


@dataclass
class Service:
    """The deployment a job scores through: where it answers, how to authenticate, what it takes."""

    name: str
    version: int | None
    url: str
    headers: Callable[[bool], dict[str, str]]  # reload=True: read the key again (after a 401)
    schema: dict[str, Any] | None = None
    classes: list[Any] | None = None
    json_only: bool = False  # an edge bundle: no frame route
    log_dir: Path | None = None  # where its request log lives on this machine, if it does


@dataclass
class Options:
    key: str
    method: str = "predict"
    features: list[str] | None = None
    keep: list[str] = field(default_factory=list)
    chunk_rows: int = 20_000
    in_flight: int = 4
    overwrite: bool = False
    progress: bool | None = None
    monitor: bool = True
    timeout: float = 120.0
    retry_s: float = 60.0


@dataclass
class Scored:
    """A chunk's outcome: the rows to write (key, predictions, kept columns), the bad rows, the requests made."""

    frame: pd.DataFrame
    bad: list[BadRow]
    requests: list[tuple[str, int]]


def plain_keys(col: pd.Series) -> list[Any]:
    """Keys as the checkpoint stores and compares them: integers as ints, anything else as text."""
    if col.dtype.kind in "iu":
        return col.tolist()
    return [str(v) for v in col.tolist()]


def _features(opts: Options, service: Service, columns: list[str]) -> list[str]:
    """The columns sent to the model: ``features=``, else the schema's names, else every column but the key's."""
    names = opts.features
    schema = service.schema or {}
    if names is None and schema.get("kind") == "dataframe":
        names = [str(c["name"]) for c in schema.get("columns", [])]
    elif names is None and schema.get("feature_names"):
        names = [str(n) for n in schema["feature_names"]]
    elif names is None:
        names = [c for c in columns if c != opts.key and c not in opts.keep]
    missing = [n for n in names if n not in columns]
    if missing:
        raise UsageError(
            f"the source has no column '{missing[0]}'"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ", which the model takes",
            hint=f"the source's columns: {', '.join(columns[:20])}; rename them in a query (sql='SELECT …'), "
            "or pass features=[…] in the order the model expects",
        )
    return names


class _Prefetch:
    """Reads the next chunk while the current ones are scored (one ahead, so memory stays bounded)."""

    _END = object()

    def __init__(self, chunks: Iterator[pd.DataFrame]) -> None:
        self._chunks = chunks
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nbdeploy-batch-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                if not self._put(chunk):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the job, which raises it
            self._put(exc)
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[pd.DataFrame]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Job:
    """Scores ``source`` through ``service`` into ``sink``."""

    def __init__(self, service: Service, source: Source, sink: Sink, opts: Options) -> None:
        self.service, self.source, self.sink, self.opts = service, source, sink, opts
        if not 1 <= opts.chunk_rows <= 200_000:
            raise UsageError(f"chunk_rows={opts.chunk_rows}: take 1 to 200,000 rows per chunk (the service's limit)")
        if not 1 <= opts.in_flight <= 64:
            raise UsageError(f"in_flight={opts.in_flight}: take 1 to 64 chunks at once")
        self.kinds = validate.feature_kinds(service.schema) if service.schema else {}
        self.check = validate.local_check(service.schema) if service.schema else None
        self.transport: Transport | None = None

    def run(self) -> BatchResult:
        opts, service = self.opts, self.service
        columns = self.source.columns()
        if opts.key not in columns:
            raise UsageError(
                f"the source has no key column '{opts.key}'",
                hint=f"key= names a column that identifies each row; the source's columns: {', '.join(columns[:20])}",
            )
        missing_keep = [c for c in opts.keep if c not in columns]
        if missing_keep:
            raise UsageError(f"keep= names '{missing_keep[0]}', which the source has not")
        self.features = _features(opts, service, columns)
        read = list(dict.fromkeys([opts.key, *self.features, *opts.keep]))
        dup = self.source.duplicate_key(opts.key)
        if dup is not None:
            raise _duplicate(opts.key, dup)
        meta = {"key": opts.key, "method": opts.method, "deployment": service.name, "version": service.version}
        total = self.source.total_rows()
        prior_scored, prior_bad = self.sink.open(meta, opts.overwrite)
        resuming = prior_scored + prior_bad > 0
        result = BatchResult(
            deployment=service.name, version=service.version, url=service.url, method=opts.method, key=opts.key,
            source=self.source.description, destination=self.sink.description,
            quarantine_at=self.sink.quarantine_description, rows_skipped=prior_scored + prior_bad, resumed=resuming,
            _sink=self.sink,
        )  # fmt: skip
        bar = Bar(f"{service.name}", total, prior_scored + prior_bad, opts.progress)
        result.job = uuid.uuid4().hex[:12]
        marker = Marker(service.log_dir if opts.monitor else None, result.job)
        self.transport = Transport(
            service.url, service.headers, opts.method, opts.in_flight, opts.timeout, opts.retry_s, service.json_only
        )
        started = time.perf_counter()
        reader = _Prefetch(self.source.chunks(opts.chunk_rows, read, validate.text_columns(service.schema or {})))
        pool = ThreadPoolExecutor(max_workers=opts.in_flight, thread_name_prefix="nbdeploy-batch")
        pending: deque[Future[Scored]] = deque()
        ok = False

        def commit(done: Scored) -> None:
            try:
                self.sink.write(done.frame, done.bad)
            except DuplicateKey as exc:
                raise _duplicate(opts.key, exc.key) from None
            result.rows_scored += len(done.frame)
            result.rows_quarantined += len(done.bad)
            result.chunks += 1
            marker.mark(done.requests)
            bar.update(result.rows_scored, result.rows_quarantined)

        try:
            for chunk in reader:
                keys = self._checked_keys(chunk)
                if resuming:
                    already = self.sink.done(keys)
                    if already:
                        chunk = chunk[[k not in already for k in keys]].reset_index(drop=True)
                if chunk.empty:
                    continue
                pending.append(pool.submit(self._score, chunk))
                while len(pending) >= opts.in_flight:
                    commit(pending.popleft().result())
            while pending:
                commit(pending.popleft().result())
            self.sink.finish()
            ok = True
        finally:
            for future in pending:
                future.cancel()
            reader.close()
            pool.shutdown(wait=True, cancel_futures=True)
            self.transport.close()
            result.seconds = time.perf_counter() - started
            result.retries = self.transport.retried
            result.marked_for_monitor = marker.marked
            bar.close(result.rows_scored, result.rows_quarantined, ok)
            if not ok:
                self.sink.close()
        return result

    def _checked_keys(self, chunk: pd.DataFrame) -> list[Any]:
        col = chunk[self.opts.key]
        if col.dtype.kind not in "iuO" and not pd.api.types.is_string_dtype(col.dtype):
            raise UsageError(
                f"the key column '{self.opts.key}' holds {col.dtype} values: a key must be an integer or text",
                hint="cast it in a query (CAST(key AS TEXT)) or in the frame (df[key].astype(str))",
            )
        if col.isna().any():
            raise UsageError(
                f"the key column '{self.opts.key}' has a missing value",
                hint="every row needs a key to be resumable: leave such rows out (WHERE key IS NOT NULL) "
                "or choose another key",
            )
        dup = col.duplicated()
        if dup.any():
            raise _duplicate(self.opts.key, col[dup].iloc[0])
        return plain_keys(col)

    def _score(self, chunk: pd.DataFrame) -> Scored:
        """One chunk, in a sender thread: typed, sent, its refused rows isolated and the rest sent again."""
        assert self.transport is not None
        opts = self.opts
        typed, unconvertible = validate.conform(chunk, self.kinds)
        bad = {pos: message for pos, message in unconvertible.items()}
        rows = np.array([i for i in range(len(typed)) if i not in bad], dtype=int)
        requests: list[tuple[str, int]] = []
        values: np.ndarray | None = None
        classes: list[Any] | None = None
        attempts = 0
        while len(rows):
            whole = len(rows) == len(typed)  # no copy of a clean chunk
            frame = typed[self.features] if whole else typed.iloc[rows][self.features].reset_index(drop=True)
            answer = self.transport.send(frame)
            if answer.request_id:
                requests.append((answer.request_id, len(frame)))
            if answer.refusal is None:
                values, classes = answer.values, answer.classes
                break
            found = self._isolate(frame, answer.refusal, local=attempts == 0)
            for pos, message in found:
                bad[int(rows[pos])] = message
            rows = np.delete(rows, [pos for pos, _ in found])
            attempts += 1
        whole = len(rows) == len(chunk)
        out = chunk[[opts.key]].copy() if whole else chunk.iloc[rows][[opts.key]].reset_index(drop=True)
        for name, column in self._outputs(values, classes, len(rows)).items():
            out[name] = column
        for name in opts.keep:
            if name != opts.key:
                out[name] = chunk[name].to_numpy() if whole else chunk[name].iloc[rows].to_numpy()
        keys = chunk[opts.key]
        quarantined = [
            bad_row(plain_keys(keys.iloc[[pos]])[0], chunk.iloc[pos], message, self.features)
            for pos, message in sorted(bad.items())
        ]
        return Scored(out, quarantined, requests)

    def _isolate(self, frame: pd.DataFrame, refusal: validate.Refusal, local: bool) -> list[tuple[int, str]]:
        """The rows of a refused frame that are refused, found here when the schema is known, else by asking."""
        assert self.transport is not None
        transport = self.transport

        def remote(sub: pd.DataFrame) -> validate.Refusal | None:
            return transport.send(sub).refusal

        found: list[tuple[int, str]] = []
        if local and self.check is not None:
            found = validate.find_bad(frame, self.check)
        if not found:
            found = validate.find_bad(frame, remote, first=refusal)
        if not found:
            raise PredictionError(
                f"the service refused a chunk but no row of it alone: {refusal.message}",
                status=400,
                hint="a rule over several rows? score with a smaller chunk_rows=, or look at dep.logs()",
            )
        return found

    def _outputs(self, values: np.ndarray | None, classes: list[Any] | None, n: int) -> dict[str, Any]:
        """The prediction columns: ``prediction``; ``proba_<class>`` for predict_proba; ``score``/``score_<class>``."""
        method = self.opts.method
        if values is None:  # every row of the chunk was quarantined
            return {}
        labels = classes if classes is not None else self.service.classes
        if values.ndim == 1:
            return {"prediction" if method == "predict" else "score": _column(values)}
        prefix = {"predict": "prediction", "predict_proba": "proba", "decision_function": "score"}[method]
        names = [str(c) for c in labels] if labels is not None and len(labels) == values.shape[1] else None
        return {f"{prefix}_{names[j] if names else j}": _column(values[:, j]) for j in range(values.shape[1])}


def _column(values: np.ndarray) -> np.ndarray:
    """A prediction column: text labels as Python strings (not NumPy's fixed-width unicode)."""
    return values.astype(object) if values.dtype.kind == "U" else values


def _duplicate(key: str, value: Any) -> UsageError:
    return UsageError(
        f"the key {value!r} occurs twice in the source's column '{key}'",
        hint="a key must name one row: deduplicate the source (or choose another key), then run again with "
        "overwrite=True (--overwrite)",
    )
