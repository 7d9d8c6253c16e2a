"""The HTTP client of a deployment: encode what users pass to ``predict``, send it, decode the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pandas as pd

from .errors import PredictionError, UsageError
from .registry import Record, Registry
from .runtime import frames
from .runtime.model import ANSWER_KEYS
from .wire import encode, warn_names

#: From this many rows a DataFrame goes to the service as an .npz body (runtime/frames.py), not JSON.
NPZ_ROWS = 1000


def _unreachable(rec: Record, exc: Exception, status: str) -> PredictionError:
    """Why nothing answered, in the words of what the user can do about it."""
    where = f"'{rec.name}' v{rec.version}"
    if status == "stopped":
        return PredictionError(
            f"{where} is stopped: nothing answers at {rec.url}",
            status=0,
            hint=f"deploy it again, or serve this version again with nbdeploy.rollback('{rec.name}', {rec.version})",
        )
    if status == "failed":
        return PredictionError(
            f"{where} is not running (its server died): nothing answers at {rec.url}",
            status=0,
            hint=f"dep.restart() or `nbdeploy restart {rec.name}`; dep.logs() tells why it died",
        )
    return PredictionError(
        f"cannot reach {where} at {rec.url}: {type(exc).__name__}: {exc}",
        status=0,
        hint=f"its status is {status}; dep.logs() may tell why",
    )


class ServiceClient:
    """HTTP to one deployment's service: the key from the registry, large frames as ``.npz``, one retry on 401
    (another handle rotated the key), JSON for services older than the ``.npz`` route."""

    def __init__(self, record: Record, registry: Registry) -> None:
        self.record = record
        self.registry = registry
        self._http: httpx.Client | None = None
        self._key: str | None = None

    def headers(self, reload: bool = False) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.record.info.auth:
            if self._key is None or reload:
                self._key = self.registry.key(self.record.name)
            if self._key:
                headers["authorization"] = f"Bearer {self._key}"
        return headers

    def use_key(self, key: str) -> None:
        self._key = key

    def predict(
        self, data: Any, timeout: float, status: Callable[[], str], method: str = "predict"
    ) -> tuple[np.ndarray, str | None]:
        """Predictions and the request id; ``status`` is asked only to explain an unreachable service."""
        answer, rid = self.call(method, data, timeout, status)
        return np.asarray(answer[ANSWER_KEYS[method]]), rid

    def check_method(self, method: str) -> None:
        """Refuse, before any HTTP, a method the deploy-time record says the model lacks (older records say
        nothing: the service answers for itself)."""
        rec = self.record
        if rec.info.methods is not None and method not in rec.info.methods:
            what = "a function answers predictions only" if rec.info.kind == "function" else "the model lacks it"
            raise UsageError(
                f"'{rec.name}' v{rec.version} has no {method}: {what}",
                hint=f"its methods: {', '.join(rec.info.methods)}",
            )

    def call(
        self, method: str, data: Any, timeout: float, status: Callable[[], str]
    ) -> tuple[dict[str, Any], str | None]:
        """The service's JSON answer to ``method`` (``predict``, ``predict_proba``, ``decision_function``) and the
        request id."""
        rec = self.record
        self.check_method(method)
        warn_names(data, rec.info.schema)  # named columns for an unnamed array model: taken by position
        if self._http is None:
            self._http = httpx.Client(timeout=timeout)
        route, body, headers = f"/{method}", None, self.headers()
        if isinstance(data, pd.DataFrame) and len(data) >= NPZ_ROWS and rec.target != "edge":
            body = frames.encode(data)  # large frames as arrays: no JSON to write or parse
        if body is None:
            body = encode(data)
        else:
            route, headers = f"{frames.MOUNT}/{method}", {**headers, "content-type": frames.MEDIA_TYPE}
        try:
            resp = self._post(route, body, headers, data)
            if resp.status_code == 401:  # the key was rotated by another handle: read it again, once
                headers = {**self.headers(reload=True), "content-type": headers["content-type"]}
                resp = self._post(route, body, headers, data)
        except httpx.HTTPError as exc:
            raise _unreachable(rec, exc, status()) from None  # the transport's frames say nothing more to the user
        answer = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
        if resp.status_code != 200 or not isinstance(answer, dict):
            msg = answer.get("error") if isinstance(answer, dict) else answer
            raise PredictionError(f"'{rec.name}' answered {resp.status_code}: {msg}", status=resp.status_code)
        return answer, answer.get("request_id")

    def _post(self, route: str, body: bytes, headers: dict[str, str], data: Any) -> httpx.Response:
        assert self._http is not None
        resp = self._http.post(f"{self.record.url}{route}", content=body, headers=headers)
        if not route.startswith(f"{frames.MOUNT}/") or resp.status_code != 404 or _says_why(resp):
            return resp
        # a version deployed before the .npz route: JSON, as it always took
        headers = {**headers, "content-type": "application/json"}
        json_route = route.removeprefix(frames.MOUNT)
        return self._http.post(f"{self.record.url}{json_route}", content=encode(data), headers=headers)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


def _says_why(resp: httpx.Response) -> bool:
    """A 404 of the service's own (a method the model lacks), not of a route an older service does not have."""
    return resp.headers.get("content-type", "").startswith("application/json") and "error" in resp.text
