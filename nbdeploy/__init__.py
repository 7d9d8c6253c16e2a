"""nbdeploy: deploy a model from a live notebook session to a BentoML endpoint in one call."""

from __future__ import annotations

import typing as _typing

from ._api import audit, deploy, deployments, export_edge, get, manifests, rollback, verify
from .deployment import Deployment
from .errors import (
    CaptureError,
    DeploymentNotFound,
    EdgeExportError,
    EngineError,
    ImageBuildError,
    NbdeployError,
    NotSupported,
    PackagingError,
    PredictionError,
    SchemaError,
    SecretFoundError,
    Superseded,
    TargetError,
    TargetOptionError,
    UsageError,
    VerificationError,
)
from .targets import Target, available_targets, register_target

if _typing.TYPE_CHECKING:  # for type checkers and the API reference; at run time it is imported on first use (scipy)
    from .monitor.drift import DriftThresholds

__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "Deployment",
    "DeploymentNotFound",
    "DriftThresholds",
    "EdgeExportError",
    "EngineError",
    "ImageBuildError",
    "NbdeployError",
    "NotSupported",
    "PackagingError",
    "PredictionError",
    "SchemaError",
    "SecretFoundError",
    "Superseded",
    "Target",
    "TargetError",
    "TargetOptionError",
    "UsageError",
    "VerificationError",
    "__version__",
    "audit",
    "available_targets",
    "deploy",
    "deployments",
    "export_edge",
    "get",
    "load_ipython_extension",
    "manifests",
    "register_target",
    "rollback",
    "verify",
]


def __getattr__(name: str) -> object:
    """``DriftThresholds`` (for ``dep.drift(thresholds=...)``) without importing scipy at ``import nbdeploy``."""
    if name == "DriftThresholds":
        from .monitor import DriftThresholds

        return DriftThresholds
    raise AttributeError(f"module 'nbdeploy' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:  # type: ignore[no-untyped-def]
    """``%load_ext nbdeploy``: registers %deploy, %deployments, %undeploy, %monitor (imported lazily)."""
    from .magics import register

    register(ipython)
