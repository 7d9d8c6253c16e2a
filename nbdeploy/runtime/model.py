"""Load the captured artifact inside the service and turn predictions into JSON-ready lists."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from .schema import to_model_input

log = logging.getLogger("nbdeploy.runtime")

ARTIFACT = "model.pkl"
META = "meta.json"


class IntegrityError(RuntimeError):
    """The artifact on disk is not the one that was captured."""


def read_meta(artifact_dir: Path) -> dict[str, Any]:
    return json.loads((artifact_dir / META).read_text())


def load_model(artifact_dir: Path, meta: dict[str, Any]) -> Any:
    """Unpickle the artifact after checking its sha256 against the one recorded at capture."""
    data = (artifact_dir / ARTIFACT).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["sha256"]:
        log.error(
            "nbdeploy: artifact %s has sha256 %s but %s was captured; refusing to start",
            artifact_dir / ARTIFACT,
            digest,
            meta["sha256"],
        )
        raise IntegrityError(f"artifact sha256 mismatch: {digest} != {meta['sha256']}")
    return cloudpickle.loads(data)


def to_jsonable(out: Any) -> list[Any]:
    """Predictions as plain Python values (floats keep every bit through JSON)."""
    if isinstance(out, (pd.DataFrame, pd.Series)):
        out = out.to_numpy()
    arr = np.asarray(out)
    if arr.dtype.kind == "M":
        return [None if pd.isna(v) else pd.Timestamp(v).isoformat() for v in arr.ravel()]
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        return np.where(np.isnan(arr), None, arr.astype(object)).tolist()
    return arr.tolist()


class Predictor:
    """The captured object plus its schema: validated inputs in, JSON-ready predictions out."""

    def __init__(self, artifact_dir: Path) -> None:
        self.meta = read_meta(artifact_dir)
        self.schema = self.meta["schema"]
        obj = load_model(artifact_dir, self.meta)
        self._fn = obj.predict if self.meta["kind"] == "estimator" else obj

    def predict(self, inputs: Any) -> list[Any]:
        frame = to_model_input(inputs, self.schema)
        out = self._fn(frame)
        preds = to_jsonable(out)
        if len(preds) != len(frame):
            raise RuntimeError(f"the model returned {len(preds)} predictions for {len(frame)} rows")
        return preds
