"""Capture a live object into a ModelArtifact: bytes, requirements, input schema, lineage.

Nothing is written anywhere here: the secret scan runs on the bytes in memory, so a refused
capture leaves no trace on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CaptureError
from ..runtime.model import to_jsonable
from ..runtime.schema import InputError, to_model_input
from ..wire import payload
from . import deps, lineage, secrets, serialize, usage
from .schema import as_frame, infer_schema

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
        raise CaptureError(
            f"the model fails on its own sample: {type(exc).__name__}: {exc}",
            hint="pass the frame the model was trained on (same columns and dtypes)",
        ) from exc
    predictions = to_jsonable(out)
    return inputs, predictions, used, _row_independent(fn, model_input, predictions)


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
    schema = infer_schema(sample)
    fn = obj.predict if kind == "estimator" else obj
    probe_inputs, probe_predictions, executed, batchable = _probe(fn, sample, schema)
    try:
        data, referenced, local = serialize.dumps(obj)
    except Exception as exc:
        raise CaptureError(f"the object cannot be serialised: {type(exc).__name__}: {exc}") from exc
    secrets.check(obj, data, allow_secrets)
    wheels = [str(Path(w).resolve()) for w in wheels or []]
    named = list(requirements or []) + _wheel_names(wheels)
    modules = referenced | executed | _imports_of_code_sent_by_value(obj, local)
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
