"""Encode what users pass to ``predict`` into the service's JSON, and decode the answer."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd


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


def payload(data: Any) -> dict[str, Any]:
    """``{"inputs": ...}`` for a DataFrame (split form), records, one record, or a 2-D array."""
    if isinstance(data, pd.DataFrame):
        cols = [str(c) for c in data.columns]
        rows = [[_clean(v) for v in row] for row in data.itertuples(index=False, name=None)]
        return {"inputs": {"columns": cols, "data": rows}}
    if isinstance(data, np.ndarray):
        arr = np.atleast_2d(data)
        return {"inputs": [[_clean(v) for v in row] for row in arr.tolist()]}
    if isinstance(data, dict):
        return {"inputs": [{k: _clean(v) for k, v in data.items()}]}
    if isinstance(data, list):
        return {"inputs": [{k: _clean(v) for k, v in r.items()} if isinstance(r, dict) else r for r in data]}
    raise TypeError(f"cannot send a {type(data).__name__}: pass a DataFrame, records, a dict or a 2-D array")


def encode(data: Any) -> bytes:
    return json.dumps(payload(data), allow_nan=False).encode()
