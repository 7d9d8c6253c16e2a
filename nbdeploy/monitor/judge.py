"""Drift judged outside the kernel: a live panel's worker process (``python -m nbdeploy.monitor.judge``).

Judging drift is the costly part of a refresh (parsing the logged inputs, the tests on every feature, the
distributions, the attribution, the browser's table): done in the kernel it took ~50 ms of a 100-feature panel's
refresh. The worker keeps its own ``LogCache`` of the version's request log and answers each "judge now" with the
drift part of ``PanelData`` and of the view model, ready to draw: the kernel pays for unpickling the answer. The
hysteresis flags and the statistic-over-time history stay the kernel's (sent with the first request, updated from
every answer), so a worker that dies is replaced, or the kernel judges again itself, without a jump.

Frames on the pipes: an 8-byte big-endian length, then a pickle. The worker ends when its stdin closes (the panel
closed, the kernel gone) and ignores Ctrl-C (an interrupted cell is not the panel's business).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from .cache import HISTORY_POINTS, LogCache
from .data import DRIFT_FIELDS, PanelData, judge_drift

__all__ = ["Judge"]

log = logging.getLogger(__name__)

_HEADER = 8
_FIELDS = tuple(f for f in DRIFT_FIELDS if f != "drift_basis")  # the basis is what the kernel saw
MAX_FAILURES = 3  # worker deaths before the panel judges in the kernel again


class Judge:
    """The kernel's side: one worker process per live panel, started on first use, asked at most one thing at a time.

    ``judge`` returns True when the answer was applied to the ``PanelData``, False while it is on the way (asked
    now or before; the next refresh picks it up), None when there is no worker to ask (the caller judges in-process).
    """

    def __init__(
        self, name: str, version: int, directory: Path, schema: dict[str, Any], keep_rows: int, wait_s: float = 2.0
    ) -> None:
        self.name, self.version = name, version
        self.directory, self.schema, self.keep_rows, self.wait_s = Path(directory), schema, keep_rows, wait_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.failures = 0
        self._asked = False  # a request is on the way
        self._fresh = True  # the worker has not had the kernel's history yet

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> bool:
        """Start the worker if it is not running (and has not failed too often); whether one runs."""
        if self.proc is not None and self.proc.poll() is None:
            return True
        if self.proc is not None:
            self._died()
        if self.failures >= MAX_FAILURES:
            return False
        self.proc, self._asked, self._fresh = None, False, True
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nbdeploy.monitor.judge"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
                start_new_session=True,  # Ctrl-C in the notebook interrupts the kernel's process group, not this
                close_fds=True,
            )
        except OSError:
            log.debug("could not start the drift judge", exc_info=True)
            self.failures = MAX_FAILURES
            return False
        return True

    def warm(self, cache: LogCache) -> None:
        """Have the worker read the log and the reference now, so its first judgement is quick."""
        if not self._asked and self.start():
            self._send({"warm": True, **self._base(cache)})

    def judge(self, data: PanelData, cache: LogCache, max_rows: int) -> bool | None:
        """Ask for a judgement (unless one is on the way) and apply the answer if it comes within ``wait_s``."""
        if not self.start():
            return None
        request = {**self._base(cache), "max_rows": max_rows, "thresholds": data.thresholds}
        if not self._asked and not self._send(request):
            return None
        answer = self._receive(self.wait_s)
        if answer is not None and answer.get("warm"):  # the warm-up's answer: now the judgement
            if not self._send(request):
                return None
            answer = self._receive(self.wait_s)
        if answer is None:
            return False if self._asked else None
        if "error" in answer:
            data.problems.append(f"drift could not be computed: {answer['error']}")
            return True
        for name in _FIELDS:
            setattr(data, name, answer["fields"][name])
        data.problems += answer["problems"]
        cache.flags = set(answer["flags"])
        if answer["judgement"] is not None:
            cache.history.append(answer["judgement"])
        return True

    def _base(self, cache: LogCache) -> dict[str, Any]:
        base = {"name": self.name, "version": self.version, "directory": str(self.directory)}
        base.update(schema=self.schema, keep_rows=self.keep_rows)
        base["flags"] = sorted(cache.flags)
        if self._fresh:
            base["history"] = list(cache.history)
            self._fresh = False
        return base

    def _send(self, request: dict[str, Any]) -> bool:
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        try:
            _write(proc.stdin.fileno(), request)
        except OSError:
            self._died()
            return False
        self._asked = True
        return True

    def _receive(self, wait_s: float) -> dict[str, Any] | None:
        """The answer if it arrives within ``wait_s`` (waiting on the pipe costs no CPU), else None."""
        proc = self.proc
        if proc is None or proc.stdout is None or not self._asked:
            return None
        fd = proc.stdout.fileno()
        try:
            ready, _, _ = select.select([fd], [], [], wait_s)
            if not ready:
                return None
            answer = _read(fd)
        except (OSError, EOFError, pickle.UnpicklingError):
            answer = None
        if answer is None:  # end of file or garbage: the worker is gone
            self._died()
            return None
        self._asked = False
        return answer

    def _died(self) -> None:
        self.failures += 1
        log.debug("the drift judge ended (%d failure(s))", self.failures)
        self.close()

    def close(self) -> None:
        """Stop the worker (its stdin closed, then by PID if it lingers)."""
        proc, self.proc, self._asked = self.proc, None, False
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _write(fd: int, message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(body).to_bytes(_HEADER, "big") + body)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read(fd: int) -> Any:
    header = _read_exactly(fd, _HEADER)
    if header is None:
        return None
    body = _read_exactly(fd, int.from_bytes(header, "big"))
    return None if body is None else pickle.loads(body)


# -- the worker


def _answer(request: dict[str, Any], caches: dict[tuple[str, int], LogCache]) -> dict[str, Any]:
    from .view import drift_json, drift_view

    key = (request["directory"], request["keep_rows"])
    cache = caches.get(key)
    if cache is None:
        cache = caches[key] = LogCache(Path(request["directory"]), request["schema"], keep_rows=request["keep_rows"])
    if "history" in request:
        cache.history = deque(request["history"], maxlen=HISTORY_POINTS)
    cache.flags = set(request["flags"])
    cache.update()
    if request.get("warm"):
        cache.load_reference()
        cache.rows(cache.keep_rows)  # parse what is logged
        return {"warm": True}
    data = PanelData(request["name"], request["version"], "", None, time.time(), thresholds=request["thresholds"])
    last = cache.history[-1] if cache.history else None
    judge_drift(data, None, cache.reqlog, request["max_rows"], data.thresholds, cache)
    judged = cache.history[-1] if cache.history and cache.history[-1] is not last else None
    try:
        data.drift_view = drift_json(drift_view(data, cache))
    except ValueError:  # a number JSON cannot carry: the kernel builds the view from the fields
        data.drift_view = None
    return {
        "fields": {name: getattr(data, name) for name in _FIELDS},
        "problems": data.problems,
        "flags": sorted(cache.flags),
        "judgement": judged,
    }


def main() -> int:
    """Answer requests on stdin until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print from a library must not corrupt the answers
    caches: dict[tuple[str, int], LogCache] = {}
    while True:
        try:
            request = _read(0)
        except (OSError, EOFError, pickle.UnpicklingError):
            return 1
        if request is None:
            return 0
        try:
            answer = _answer(request, caches)
        except Exception as exc:  # said in the panel's problems; the worker goes on
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            _write(out, answer)
        except OSError:  # the panel is gone
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
