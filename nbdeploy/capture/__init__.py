"""Capture a live object into a ModelArtifact: bytes, requirements, input schema, lineage.

Nothing is written anywhere here: the secret scan runs on the bytes in memory, so a refused
capture leaves no trace on disk.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CaptureError
from ..runtime.model import to_jsonable
from ..runtime.schema import InputError, to_model_input
from ..wire import payload
from . import deps, lineage, secrets, serialize, usage
from .schema import as_frame, infer_schema, schema_modules

#: Rows of the sample replayed at capture (and by ``verify``): enough to exercise the model, cheap to trace.
PROBE_ROWS = 200


@dataclass(frozen=True)
class ModelArtifact:
    """Everything the package step needs; nothing in here refers to the live session."""

    payload: bytes
    kind: str  # "estimator" (has .predict) or "function"
    sha256: str
    requirements: list[str]
    schema: dict[str, Any]
    lineage: dict[str, Any]
    local_modules: list[str] = field(default_factory=list)
    wheels: list[str] = field(default_factory=list)
    probe_inputs: Any = None  # the first rows of the sample, as the service receives them
    probe_predictions: list[Any] = field(default_factory=list)  # the session's answer to them
    batchable: bool = False  # rows predicted together == rows predicted apart, on the probe

    def meta(self, service_name: str) -> dict[str, Any]:
        return {
            "service_name": service_name,
            "kind": self.kind,
            "sha256": self.sha256,
            "schema": self.schema,
            "requirements": self.requirements,
            "lineage": self.lineage,
            "batchable": self.batchable,
        }


def object_kind(obj: Any) -> str:
    if callable(getattr(obj, "predict", None)):
        return "estimator"
    if callable(obj) and not isinstance(obj, type):
        return "function"
    raise CaptureError(
        f"a {type(obj).__name__} cannot be deployed: it has no predict() method and is not a function",
        hint="pass a fitted estimator or pipeline, or a function f(DataFrame) -> predictions",
    )


def _probe(fn: Any, sample: Any, schema: dict[str, Any]) -> tuple[Any, list[Any], set[str], bool]:
    """Send the sample's first rows through the service's own input path and the model, traced."""
    data = as_frame(sample)
    inputs = payload(data[:PROBE_ROWS])["inputs"]
    try:
        model_input = to_model_input(inputs, schema)
    except InputError as exc:
        raise CaptureError(f"the sample does not survive the trip through JSON: {exc}") from exc
    try:
        out, used = usage.run_traced(fn, model_input)
    except Exception as exc:
        if _not_fitted_error(exc):
            raise _unfitted(fn, exc) from exc
        raise CaptureError(
            f"the model fails on its own sample: {type(exc).__name__}: {exc}",
            hint="pass the frame the model was trained on (same columns and dtypes)",
        ) from exc
    predictions = to_jsonable(out)
    return inputs, predictions, used, _row_independent(fn, model_input, predictions)


def _not_fitted_error(exc: BaseException) -> bool:
    """scikit-learn's NotFittedError, or a library's subclass or namesake (LGBMNotFittedError, xgboost's)."""
    return any(k.__name__.endswith("NotFittedError") for k in type(exc).__mro__)


def _estimator_name(obj: Any) -> str:
    steps = getattr(obj, "steps", None)
    if isinstance(steps, list) and steps and isinstance(steps[-1], tuple) and len(steps[-1]) == 2:
        name, last = steps[-1]
        return f"the {type(obj).__name__}'s last step '{name}' ({type(last).__name__})"
    return f"the {type(obj).__name__}"


def _unfitted(fn: Any, exc: BaseException | None = None) -> CaptureError:
    obj = getattr(fn, "__self__", fn)
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    steps = getattr(obj, "steps", None)
    last = steps[-1][1] if isinstance(steps, list) and steps and isinstance(steps[-1], tuple) else obj
    own = not type(last).__module__.startswith(("sklearn.", "xgboost", "lightgbm", "catboost"))
    return CaptureError(
        f"the model is not fitted: {_estimator_name(obj)} has not been fitted yet{detail}",
        hint="call model.fit(...) first, then deploy the fitted model"
        + (
            f"; if {type(last).__name__} learns nothing in fit, give it a __sklearn_is_fitted__ method returning True"
            if own
            else ""
        ),
    )


def _check_fitted(obj: Any) -> None:
    """Refuse an unfitted scikit-learn estimator, or a pipeline whose last step is unfitted, before probing it."""
    if "sklearn" not in sys.modules or not hasattr(obj, "fit"):
        return
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    target = obj
    steps = getattr(obj, "steps", None)
    if isinstance(steps, list) and steps and isinstance(steps[-1], tuple) and len(steps[-1]) == 2:
        target = steps[-1][1]  # a pipeline: its last step decides (check_is_fitted on a Pipeline varies by version)
    if not isinstance(target, BaseEstimator):
        return
    if not type(target).__module__.startswith("sklearn.") and not hasattr(target, "__sklearn_is_fitted__"):
        return  # a stateless estimator of the user's has no fitted attributes to look for: the probe will tell
    try:
        check_is_fitted(target)
    except NotFittedError as exc:
        raise _unfitted(obj.predict, exc) from exc
    except Exception:
        return  # an estimator check_is_fitted cannot judge: the probe will tell


def _row_independent(fn: Any, model_input: Any, expected: list[Any]) -> bool:
    """Whether the service may batch requests: halves predicted apart must give the whole's answer."""
    n = len(model_input)
    if n < 4:
        return False
    half = n // 2
    try:
        first, second = to_jsonable(fn(model_input[:half])), to_jsonable(fn(model_input[half:]))
    except Exception:
        return False
    return first + second == expected


def _imports_of_code_sent_by_value(obj: Any, local: list[str]) -> set[str]:
    names: set[str] = set()
    for fn in usage.functions_in(obj):
        mod = fn.__module__ or "__main__"
        if mod == "__main__" or mod.partition(".")[0] in local:
            names |= usage.imported_names(fn.__code__)
    return names


def _root_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else "model"


def _wheel_names(wheels: list[str]) -> list[str]:
    for w in wheels:
        if not Path(w).is_file() or not w.endswith(".whl"):
            raise CaptureError(f"wheel '{w}' does not exist or is not a .whl file")
    return [Path(w).name.split("-")[0].replace("_", "-").lower() for w in wheels]


def capture(
    obj: Any,
    sample: Any,
    requirements: list[str] | None = None,
    *,
    wheels: list[str] | None = None,
    allow_secrets: list[str] | None = None,
) -> ModelArtifact:
    """Serialise ``obj`` and describe its environment; predict on the sample to prove it runs."""
    kind = object_kind(obj)
    if sample is None:
        raise CaptureError(
            "a sample of the model's input is needed to know its schema",
            hint="pass sample=X_train (a few rows are enough)",
        )
    if kind == "estimator":
        _check_fitted(obj)
    schema = infer_schema(sample, obj)  # the model's feature_names_in_ name an array sample's columns
    fn = obj.predict if kind == "estimator" else obj
    probe_inputs, probe_predictions, executed, batchable = _probe(fn, sample, schema)
    root = "model" if kind == "estimator" else _root_name(obj)
    try:
        pickled = serialize.dump(obj, root)
    except CaptureError:
        raise
    except Exception as exc:  # a reducer of the user's failing oddly: still one clear error, not a traceback
        raise CaptureError(f"the object cannot be serialised: {type(exc).__name__}: {exc}") from exc
    data, referenced, local = pickled.data, pickled.referenced, pickled.local
    # Optional: unpickle in a fresh interpreter too. Off by default: it costs the model's imports (about 1.4 s
    # for scikit-learn on two busy cores), and the pickler already refuses every reference to the notebook.
    loading = serialize.LoadCheck(data) if os.environ.get("NBDEPLOY_LOAD_CHECK") == "1" else None
    try:
        secrets.check(obj, data, allow_secrets, skip_buffers=pickled.numeric_buffers)
    except BaseException:
        if loading is not None:
            loading.cancel()
        raise
    if loading is not None:
        loading.result()
    wheels = [str(Path(w).resolve()) for w in wheels or []]
    named = list(requirements or []) + _wheel_names(wheels)
    modules = referenced | executed | _imports_of_code_sent_by_value(obj, local) | schema_modules(schema)
    pins = deps.requirements_for(modules - set(local), named)
    pins = [p for p in pins if p not in _wheel_names(wheels)]
    sha = hashlib.sha256(data).hexdigest()
    info = lineage.record()
    info.update(
        requirements_sha256=hashlib.sha256("\n".join(sorted(pins)).encode()).hexdigest(),
        artifact_sha256=sha,
    )
    return ModelArtifact(
        payload=data,
        kind=kind,
        sha256=sha,
        requirements=pins,
        schema=schema,
        lineage=info,
        local_modules=local,
        wheels=wheels,
        probe_inputs=probe_inputs,
        probe_predictions=probe_predictions,
        batchable=batchable,
    )
