"""Capture a live object into a ModelArtifact: bytes, requirements, input schema, lineage."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import CaptureError
from . import deps, lineage, serialize
from .schema import as_frame, infer_schema


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

    def meta(self, service_name: str) -> dict[str, Any]:
        return {
            "service_name": service_name,
            "kind": self.kind,
            "sha256": self.sha256,
            "schema": self.schema,
            "requirements": self.requirements,
            "lineage": self.lineage,
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


def capture(obj: Any, sample: Any, requirements: list[str] | None = None) -> ModelArtifact:
    """Serialise ``obj`` and describe its environment; predict on the sample to prove it runs."""
    kind = object_kind(obj)
    if sample is None:
        raise CaptureError(
            "a sample of the model's input is needed to know its schema",
            hint="pass sample=X_train (a few rows are enough)",
        )
    schema = infer_schema(sample)
    frame = as_frame(sample)
    fn = obj.predict if kind == "estimator" else obj
    try:
        fn(frame[:5])
    except Exception as exc:
        raise CaptureError(
            f"the model fails on its own sample: {type(exc).__name__}: {exc}",
            hint="pass the frame the model was trained on (same columns and dtypes)",
        ) from exc
    try:
        payload, modules, local = serialize.dumps(obj)
    except Exception as exc:
        raise CaptureError(f"the object cannot be serialised: {type(exc).__name__}: {exc}") from exc
    return ModelArtifact(
        payload=payload,
        kind=kind,
        sha256=hashlib.sha256(payload).hexdigest(),
        requirements=deps.requirements_for(modules, requirements),
        schema=schema,
        lineage=lineage.record(),
        local_modules=local,
    )
