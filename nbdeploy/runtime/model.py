"""Load the captured artifact inside the service and turn predictions into JSON-ready lists."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from .schema import to_model_input

ARTIFACT = "model.pkl"
META = "meta.json"
#: The sha256 the service trusts. It comes from the registry record, through the target's environment: never
#: from the artifact's own folder, where whoever swaps the pickle can rewrite ``meta.json`` too.
EXPECTED_SHA256 = "NBDEPLOY_ARTIFACT_SHA256"


class IntegrityError(RuntimeError):
    """The artifact on disk is not the one that was captured."""


def read_meta(artifact_dir: Path) -> dict[str, Any]:
    return json.loads((artifact_dir / META).read_text())


def _refuse(message: str) -> IntegrityError:
    # stderr, not logging: the server's logging setup is not ours, and this line must be seen.
    sys.stderr.write(f"nbdeploy: REFUSING TO START: {message}\n")
    sys.stderr.flush()
    return IntegrityError(message)


def load_model(artifact_dir: Path, meta: dict[str, Any], expected: str | None = None) -> Any:
    """Unpickle the artifact only if its sha256 is the one recorded at capture, as told by ``expected`` (or the
    ``NBDEPLOY_ARTIFACT_SHA256`` variable): the hash in ``meta.json`` beside the artifact is not trusted."""
    expected = expected or os.environ.get(EXPECTED_SHA256)
    path = artifact_dir / ARTIFACT
    if not expected:
        raise _refuse(
            f"no trusted sha256 for {path}: set {EXPECTED_SHA256} to the sha256 recorded at capture "
            "(dep.info()['sha256'], printed by `nbdeploy export`)"
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(digest, expected):
        raise _refuse(
            f"artifact {path} has sha256 {digest}, but {expected} was captured (it was modified after capture)"
        )
    if meta.get("sha256") != expected:
        raise _refuse(f"{artifact_dir / META} names another artifact ({meta.get('sha256')}) than the one captured")
    return cloudpickle.loads(data)


def to_jsonable(out: Any) -> list[Any]:
    """Predictions as plain Python values (floats keep every bit through JSON)."""
    if isinstance(out, (pd.DataFrame, pd.Series)):
        out = out.to_numpy()
    arr = np.asarray(out)
    if arr.dtype.kind == "M":
        return [None if pd.isna(v) else pd.Timestamp(v).isoformat() for v in arr.ravel()]
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        return np.where(np.isnan(arr), None, arr.astype(object)).tolist()  # type: ignore[call-overload]
    return arr.tolist()


class Predictor:
    """The captured object plus its schema: validated inputs in, JSON-ready predictions out."""

    def __init__(self, artifact_dir: Path) -> None:
        self.meta = read_meta(artifact_dir)
        self.schema = self.meta["schema"]
        obj = load_model(artifact_dir, self.meta)
        self._fn = obj.predict if self.meta["kind"] == "estimator" else obj

    @property
    def width(self) -> int:
        """Columns (or features) the model takes: no request may name more."""
        schema = self.schema
        return int(schema["n_features"]) if schema["kind"] == "ndarray" else len(schema["columns"])

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
