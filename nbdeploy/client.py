"""The HTTP client of a deployment: encode what users pass to ``predict``, send it, decode the answer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pandas as pd
from pydantic_core import to_json

from .errors import PredictionError, UsageError
from .registry import Record, Registry
from .runtime import frames

#: From this many rows a DataFrame goes to the service as an .npz body (runtime/frames.py), not JSON.
NPZ_ROWS = 1000


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _column(col: pd.Series) -> list[Any]:
    """One column as plain Python values, vectorised (a 100k-row frame encodes in milliseconds)."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return [None if pd.isna(v) else v.isoformat() for v in col]
    if pd.api.types.is_float_dtype(col.dtype) and np.isinf(col.to_numpy(dtype="float64", na_value=np.nan)).any():
        raise UsageError(f"column '{col.name}' holds infinity, which the service refuses (400)")
    values = col.astype(object).tolist() if isinstance(col.dtype, pd.CategoricalDtype) else col.tolist()
    if col.hasnans:
        return [_clean(v) for v in values]
    return values


def payload(data: Any) -> dict[str, Any]:
    """``{"inputs": ...}`` for a DataFrame (split form), records, one record, or a 2-D array."""
    if isinstance(data, pd.DataFrame):
        cols = [str(c) for c in data.columns]
        columns = [_column(data.iloc[:, i]) for i in range(data.shape[1])]
        return {"inputs": {"columns": cols, "data": [list(row) for row in zip(*columns, strict=True)]}}
    if isinstance(data, np.ndarray):
        arr = np.atleast_2d(data)
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            return {"inputs": np.where(np.isnan(arr), None, arr.astype(object)).tolist()}  # type: ignore[call-overload]
        return {"inputs": arr.tolist()}
    if isinstance(data, dict):
        return {"inputs": [{k: _clean(v) for k, v in data.items()}]}
    if isinstance(data, list):
        return {"inputs": [{k: _clean(v) for k, v in r.items()} if isinstance(r, dict) else r for r in data]}
    raise UsageError(f"cannot send a {type(data).__name__}: pass a DataFrame, records, a dict or a 2-D array")


def encode(data: Any) -> bytes:
    """JSON bytes; pydantic-core's encoder (it comes with BentoML) writes floats shortest-exact, fast."""
    return to_json(payload(data), inf_nan_mode="strings")


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
