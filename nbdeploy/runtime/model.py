"""Load the captured artifact inside the service and turn predictions into JSON-ready lists."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from .compiled import CompiledError, load_compiled, recheck
from .schema import to_model_input

ARTIFACT = "model.pkl"
META = "meta.json"
#: The sha256 the service trusts. It comes from the registry record, through the target's environment: never
#: from the artifact's own folder, where whoever swaps the pickle can rewrite ``meta.json`` too.
EXPECTED_SHA256 = "NBDEPLOY_ARTIFACT_SHA256"
#: The sha256 of the compiled model's manifest (which holds every compiled file's), from the registry as well.
COMPILED_SHA256 = "NBDEPLOY_COMPILED_SHA256"
#: Frames up to this many rows take the compiled path even where Python was measured faster on 1,000 rows.
SMALL_FRAME_ROWS = 100
#: Methods served beside ``predict`` when the model has them (scikit-learn's names), each at ``POST /<method>``.
SCORE_METHODS = ("predict_proba", "decision_function")
#: What each method's answer is called in the JSON body (the service writes it, the SDK's client reads it).
ANSWER_KEYS = {"predict": "predictions", "predict_proba": "probabilities", "decision_function": "scores"}


class IntegrityError(RuntimeError):
    """The artifact on disk is not the one that was captured."""


def read_meta(artifact_dir: Path) -> dict[str, Any]:
    return json.loads((artifact_dir / META).read_text())


def _say(line: str) -> None:
    # stderr, not logging: the server's logging setup is not ours, and these lines must be seen.
    sys.stderr.write(f"nbdeploy: {line}\n")
    sys.stderr.flush()


def _refuse(message: str) -> IntegrityError:
    _say(f"REFUSING TO START: {message}")
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


def methods_of(obj: Any, kind: str) -> list[str]:
    """The score methods ``obj`` really has. ``hasattr`` is the test scikit-learn means: a Pipeline or an SVC
    without probability=True hides ``predict_proba`` (``available_if``) instead of failing when it is called."""
    if kind != "estimator":
        return []  # a function answers predictions only
    found = []
    for method in SCORE_METHODS:
        try:
            if callable(getattr(obj, method, None)):
                found.append(method)
        except Exception:  # a property that raises: the model does not have it
            continue
    return found


def classes_of(obj: Any) -> list[Any] | None:
    """The class labels in the order of ``predict_proba``'s columns, as JSON values; None when the model has none
    (a regressor, a function) or has several label sets (multi-output)."""
    try:
        classes = getattr(obj, "classes_", None)
    except Exception:
        return None
    if classes is None:
        return None
    arr = np.asarray(classes)
    if arr.ndim != 1 or (arr.dtype == object and any(isinstance(c, (list, np.ndarray)) for c in arr)):
        return None
    return to_jsonable(arr)


def _by_size(
    compiled: Callable[[Any], Any], python: Callable[[Any], Any], large: str, up_to: int
) -> Callable[[Any], Any]:
    """The compiled method, or, where Python was measured faster on large frames, Python beyond ``up_to`` rows."""
    if large != "python":
        return compiled
    return lambda frame: compiled(frame) if len(frame) <= up_to else python(frame)


class Predictor:
    """The captured object plus its schema: validated inputs in, JSON-ready predictions out."""

    def __init__(self, artifact_dir: Path) -> None:
        self.meta = read_meta(artifact_dir)
        self.schema = self.meta["schema"]
        obj = load_model(artifact_dir, self.meta)
        kind = self.meta["kind"]
        self._fn = obj.predict if kind == "estimator" else obj
        #: What ``POST /<method>`` may ask for, found on the loaded object (the artifact's metadata predates it).
        self.methods = ["predict", *methods_of(obj, kind)]
        self.classes = classes_of(obj) if kind == "estimator" else None
        self.model_type = type(obj).__name__
        self._fns: dict[str, Callable[[Any], Any]] = {"predict": self._fn}
        self._fns.update({m: getattr(obj, m) for m in self.methods[1:]})
        #: Which path answers: {"path": "onnx", "recheck": {...}} or {"path": "python", "reason": ...}
        self.serving = self._use_compiled(artifact_dir)

    def _use_compiled(self, artifact_dir: Path) -> dict[str, Any]:
        """Serve the compiled model's methods only if it still answers as the Python model does on the rows stored
        at deploy (as the artifact's sha256 is checked before unpickling); otherwise serve Python and say why."""
        try:
            compiled = load_compiled(artifact_dir, os.environ.get(COMPILED_SHA256) or None)
            if compiled is None:
                return {"path": "python", "reason": "no compiled model in this bento"}
            check = recheck(compiled, self._fns, compiled.sample(self.schema))
        except (CompiledError, OSError, ValueError, KeyError) as exc:
            _say(f"serving the Python model: the compiled model cannot be used: {exc}")
            return {"path": "python", "reason": str(exc)}
        if not check["ok"]:
            _say(f"serving the Python model: the compiled model does not answer alike at load: {check['reason']}")
            return {"path": "python", "reason": check["reason"], "recheck": check}
        for method in compiled.methods:
            up_to = max(int(compiled.manifest.get("compiled_faster_up_to_rows") or 0), SMALL_FRAME_ROWS)
            self._fns[method] = _by_size(compiled.fns[method], self._fns[method], compiled.large_frame, up_to)
        self._fn = self._fns["predict"]
        _say(
            f"serving the compiled model ({compiled.manifest.get('backend') or compiled.path}): "
            f"{check['rows']} rows rechecked, max relative difference {check['max_rel_diff']:.1e}"
        )
        return {"path": compiled.path, "recheck": check, "large_frame": compiled.large_frame, "up_to_rows": up_to}

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
        return self._checked(self._fn(frame), len(frame))

    def runner(self, method: str) -> Callable[[Any], list[Any]]:
        """``frame -> JSON-ready rows`` for one of ``methods`` (a row of ``predict_proba`` is a list)."""
        fn = self._fns[method]
        return lambda frame: self._checked(fn(frame), len(frame))

    def missing(self, method: str) -> str:
        """Why ``method`` cannot be served, naming what the model has."""
        return f"this model ({self.model_type}) has no {method}: it has {', '.join(self.methods)}" + (
            "" if self.meta["kind"] == "estimator" else " (a function answers predictions only)"
        )

    @staticmethod
    def _checked(out: Any, rows: int) -> list[Any]:
        preds = to_jsonable(out)
        if len(preds) != rows:
            raise RuntimeError(f"the model returned {len(preds)} predictions for {rows} rows")
        return preds

    def predict(self, inputs: Any) -> list[Any]:
        return self.run(self.frame(inputs))
