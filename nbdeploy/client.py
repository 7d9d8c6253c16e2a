"""The HTTP client of a deployment: encode what users pass to ``predict``, send it, decode the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pandas as pd

from .errors import PredictionError
from .registry import Record, Registry
from .runtime import frames
from .wire import encode

#: From this many rows a DataFrame goes to the service as an .npz body (runtime/frames.py), not JSON.
NPZ_ROWS = 1000


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

    def predict(self, data: Any, timeout: float, status: Callable[[], str]) -> tuple[np.ndarray, str | None]:
        """Predictions and the request id; ``status`` is asked only to explain an unreachable service."""
        rec = self.record
        if self._http is None:
            self._http = httpx.Client(timeout=timeout)
        route, body, headers = "/predict", None, self.headers()
        if isinstance(data, pd.DataFrame) and len(data) >= NPZ_ROWS and rec.target != "edge":
            body = frames.encode(data)  # large frames as arrays: no JSON to write or parse
        if body is None:
            body = encode(data)
        else:
            route, headers = frames.ROUTE, {**headers, "content-type": frames.MEDIA_TYPE}
        try:
            resp = self._post(route, body, headers, data)
            if resp.status_code == 401:  # the key was rotated by another handle: read it again, once
                headers = {**self.headers(reload=True), "content-type": headers["content-type"]}
                resp = self._post(route, body, headers, data)
        except httpx.HTTPError as exc:
            raise PredictionError(
                f"cannot reach '{rec.name}' v{rec.version} at {rec.url}: {exc}",
                status=0,
                hint=f"check dep.status() and dep.logs(); status now: {status()}",
            ) from exc
        answer = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
        if resp.status_code != 200 or not isinstance(answer, dict):
            msg = answer.get("error") if isinstance(answer, dict) else answer
            raise PredictionError(f"'{rec.name}' answered {resp.status_code}: {msg}", status=resp.status_code)
        return np.asarray(answer["predictions"]), answer.get("request_id")

    def _post(self, route: str, body: bytes, headers: dict[str, str], data: Any) -> httpx.Response:
        assert self._http is not None
        resp = self._http.post(f"{self.record.url}{route}", content=body, headers=headers)
        if route == "/predict" or resp.status_code != 404:
            return resp
        # a version deployed before the .npz route: JSON, as it always took
        headers = {**headers, "content-type": "application/json"}
        return self._http.post(f"{self.record.url}/predict", content=encode(data), headers=headers)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
