"""Chunks to the service and answers back: the binary frame route, the API key, and patience with a restart.

Chunks go as ``.npz`` frames (``runtime/frames.py``) to ``/frame/<method>``: columns as arrays, no JSON to write
or parse. An edge bundle, or a service older than that route, takes JSON at ``/<method>``. One ``httpx.Client``
and a new connection per chunk (no keep-alive): a kept connection stays with the worker (or replica) that accepted
it, whether or not that one is busy, and one that starts later never gets any. Measured through a two-worker service
(RandomForest, 500k rows): with kept connections one worker did 92 % of the work and the job ran at 0.58x the
in-process rate, with a connection per chunk 64 % and 0.78-0.83x (bench/batch.py, 1M rows: 0.66x before, 0.83x).
A connection costs well under a millisecond here, a chunk tens of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pandas as pd

from ..errors import PredictionError, UsageError
from ..runtime import frames
from ..runtime.model import ANSWER_KEYS
from ..wire import encode as json_body
from .quarantine import row_of
from .validate import Refusal

#: Statuses that mean "not now" rather than "not this": retried.
RETRY_STATUS = frozenset({429, 502, 503, 504})
#: Statuses that refuse the rows themselves (schema, or values the model cannot use): the rows are quarantined.
REFUSED_STATUS = frozenset({400, 422})


@dataclass
class Answer:
    """The service's values for a chunk and the request id; or the refusal of its rows."""

    values: np.ndarray | None
    request_id: str | None
    refusal: Refusal | None = None
    classes: list[Any] | None = None


class Transport:
    """Sends frames to one service; thread-safe (one pooled client shared by the job's senders)."""

    def __init__(
        self,
        url: str,
        headers: Callable[[bool], dict[str, str]],
        method: str,
        in_flight: int,
        timeout: float,
        retry_s: float,
        json_only: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = headers
        self.method = method
        self.retry_s = retry_s
        self.json_only = json_only
        self.retried = 0
        limits = httpx.Limits(max_connections=in_flight + 1, max_keepalive_connections=0)
        self._http = httpx.Client(timeout=timeout, limits=limits)

    def close(self) -> None:
        self._http.close()

    def send(self, frame: pd.DataFrame) -> Answer:
        """The answer for ``frame``: values, or a refusal of its rows (400/422). Raises PredictionError when the
        service refuses the request itself (401, 404, 413 ...) or stays away past ``retry_s``."""
        body = None if self.json_only else frames.encode(frame)
        if body is None:
            route, content, media = f"/{self.method}", json_body(frame), "application/json"
        else:
            route, content, media = f"{frames.MOUNT}/{self.method}", body, frames.MEDIA_TYPE
        resp = self._post(route, content, media)
        if resp.status_code == 404 and media == frames.MEDIA_TYPE and not _says_why(resp):
            self.json_only = True  # a service from before the frame route: JSON from now on
            return self.send(frame)
        answer = _json(resp)
        if resp.status_code in REFUSED_STATUS:
            message = str(answer.get("error", resp.text[:500]))
            return Answer(None, answer.get("request_id"), Refusal(message, row_of(message)))
        if resp.status_code != 200:
            raise _refused(resp, answer, self.url)
        values = np.asarray(answer[ANSWER_KEYS[self.method]])
        if len(values) != len(frame):
            raise PredictionError(
                f"the service answered {len(values)} values for {len(frame)} rows", status=resp.status_code
            )
        return Answer(values, answer.get("request_id"), classes=answer.get("classes"))

    def _post(self, route: str, content: bytes, media: str) -> httpx.Response:
        deadline = time.monotonic() + self.retry_s
        wait, reloaded = 0.25, False
        while True:
            headers = {**self._headers(False), "content-type": media}
            status = 0
            try:
                resp = self._http.post(f"{self.url}{route}", content=content, headers=headers)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 401 and not reloaded:  # the key was rotated meanwhile: read it again, once
                    self._headers(True)
                    reloaded = True
                    continue
                if resp.status_code not in RETRY_STATUS:
                    return resp
                status, error = resp.status_code, f"HTTP {resp.status_code}"
            if time.monotonic() + wait > deadline:
                raise PredictionError(
                    f"the service at {self.url} did not answer for {self.retry_s:g} s ({error})",
                    status=status,
                    hint="the chunks written so far are kept: once it answers again, run the same call to resume",
                )
            self.retried += 1
            time.sleep(wait)  # backoff while the service restarts, not a synchronisation
            wait = min(wait * 2, 5.0)


def _json(resp: httpx.Response) -> dict[str, Any]:
    if not resp.headers.get("content-type", "").startswith("application/json"):
        return {}
    answer = resp.json()
    return answer if isinstance(answer, dict) else {}


def _says_why(resp: httpx.Response) -> bool:
    """A 404 of the service's own (a method the model lacks), not of a route an older service lacks."""
    return "error" in _json(resp)


def _refused(resp: httpx.Response, answer: dict[str, Any], url: str) -> Exception:
    message = answer.get("error") or resp.text[:300]
    if resp.status_code == 413:
        return UsageError(f"the service refused a chunk as too large: {message}", hint="pass a smaller chunk_rows=")
    if resp.status_code in (401, 403):
        return PredictionError(
            f"{url} refused the API key ({resp.status_code})",
            status=resp.status_code,
            hint="pass the deployment's key (nbdeploy key NAME), or score through nbdeploy.get(NAME)",
        )
    return PredictionError(f"{url} answered {resp.status_code}: {message}", status=resp.status_code)
