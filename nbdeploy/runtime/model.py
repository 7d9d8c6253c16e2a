"""Load the captured artifact inside the service and turn predictions into JSON-ready lists."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from .schema import to_model_input

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
        # stderr, not logging: the server's logging setup is not ours, and this line must be seen.
        sys.stderr.write(
            f"nbdeploy: REFUSING TO START: artifact {artifact_dir / ARTIFACT} has sha256 {digest}, "
            f"but {meta['sha256']} was captured (it was modified after capture)\n"
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

    @property
    def batchable(self) -> bool:
        """Shown at capture: predicting rows together gives what predicting them apart gives."""
        return bool(self.meta.get("batchable", False))

    def frame(self, inputs: Any) -> Any:
        """Validated model input (raises InputError naming the column)."""
        return to_model_input(inputs, self.schema)

    def run(self, frame: Any) -> list[Any]:
        preds = to_jsonable(self._fn(frame))
        if len(preds) != len(frame):
            raise RuntimeError(f"the model returned {len(preds)} predictions for {len(frame)} rows")
        return preds

    def predict(self, inputs: Any) -> list[Any]:
        return self.run(self.frame(inputs))
