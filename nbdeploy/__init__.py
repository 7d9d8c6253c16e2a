"""nbdeploy: deploy a model from a live notebook session to a BentoML endpoint in one call.

Every public name is imported on first use (PEP 562): ``import nbdeploy`` and the ``nbdeploy`` command stay quick,
because pandas, numpy, httpx and BentoML load only when a name that needs them is first touched.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from .errors import (  # light (no third-party imports), and every command needs them
    CaptureError,
    DeploymentNotFound,
    EdgeExportError,
    EngineError,
    ImageBuildError,
    NbdeployError,
    NotSupported,
    PackagingError,
    PredictionError,
    PromotionRefused,
    SchemaError,
    SecretFoundError,
    Superseded,
    TargetError,
    TargetOptionError,
    UsageError,
    VerificationError,
)

if _typing.TYPE_CHECKING:  # for type checkers and the API reference; at run time each name is imported on first use
    from ._api import (
        audit,
        deploy,
        deployments,
        export_edge,
        get,
        get_endpoint,
        manifests,
        promote,
        rollback,
        verify,
    )
    from .batch import BatchResult, score
    from .comparison import Comparison, PromotionRules, compare
    from .deployment import Deployment
    from .maintenance import AlertRule, Maintenance, RetrainData, Webhook, maintain, verify_signature
    from .monitor.drift import DriftThresholds
    from .targets import Target, available_targets, register_target

__version__ = "0.1.0"

__all__ = [
    "AlertRule",
    "BatchResult",
    "CaptureError",
    "Comparison",
    "Deployment",
    "DeploymentNotFound",
    "DriftThresholds",
    "EdgeExportError",
    "EngineError",
    "ImageBuildError",
    "Maintenance",
    "NbdeployError",
    "NotSupported",
    "PackagingError",
    "PredictionError",
    "PromotionRefused",
    "PromotionRules",
    "RetrainData",
    "SchemaError",
    "SecretFoundError",
    "Superseded",
    "Target",
    "TargetError",
    "TargetOptionError",
    "UsageError",
    "VerificationError",
    "Webhook",
    "__version__",
    "audit",
    "available_targets",
    "compare",
    "deploy",
    "deployments",
    "export_edge",
    "get",
    "get_endpoint",
    "load_ipython_extension",
    "maintain",
    "manifests",
    "promote",
    "register_target",
    "rollback",
    "score",
    "verify",
    "verify_signature",
]

#: Where each lazily imported public name lives (module relative to this package).
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        [
            "audit",
            "deploy",
            "deployments",
            "export_edge",
            "get",
            "get_endpoint",
            "manifests",
            "promote",
            "rollback",
            "verify",
        ],
        "._api",
    ),
    "Deployment": ".deployment",
    **dict.fromkeys(["BatchResult", "score"], ".batch"),  # SQLAlchemy and pyarrow: only when asked for
    **dict.fromkeys(["Comparison", "PromotionRules", "compare"], ".comparison"),  # scipy: only when asked for
    **dict.fromkeys(
        ["AlertRule", "Maintenance", "RetrainData", "Webhook", "maintain", "verify_signature"], ".maintenance"
    ),
    "DriftThresholds": ".monitor",  # scipy: only when asked for
    **dict.fromkeys(["Target", "available_targets", "register_target"], ".targets"),
}


def __getattr__(name: str) -> object:
    """Import a public name on first use and keep it, so later lookups are plain attribute reads."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbdeploy' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _install_error_display() -> None:
    """In a running IPython, nbdeploy's errors show as one line and the hint (``_ipython``); nothing otherwise."""
    from ._ipython import install_if_interactive

    install_if_interactive()


def load_ipython_extension(ipython) -> None:  # type: ignore[no-untyped-def]
    """``%load_ext nbdeploy``: registers %deploy, %deployments, %undeploy, %promote, %monitor, %score (lazily)."""
    from .magics import register

    register(ipython)


_install_error_display()
