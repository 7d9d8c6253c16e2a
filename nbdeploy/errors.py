"""One exception hierarchy, so callers (and the magics) can tell user errors from bugs."""

from __future__ import annotations


class NbdeployError(Exception):
    """Base of every error nbdeploy raises on purpose; ``hint`` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UsageError(NbdeployError):
    """Arguments nbdeploy cannot use: an unknown option, column or mode. Nothing was changed."""


class CaptureError(NbdeployError):
    """The object, its sample or its environment cannot be captured."""


class SchemaError(CaptureError):
    """The sample cannot describe the model's input."""


class SecretFoundError(CaptureError):
    """A credential would end up in the artifact."""


class PackagingError(NbdeployError):
    """The bento could not be built."""


class TargetError(NbdeployError):
    """The target could not start, reach or stop the service."""


class Superseded(TargetError):
    """A deploy raced another of the same name and lost: the newer version serves, this one was stopped."""


class TargetOptionError(UsageError, TargetError):
    """An option the chosen target does not take (``registry=`` for ``target="local"``): nothing was built."""


class NotSupported(UsageError, TargetError):
    """A capability the version's target has not (``scale`` off Kubernetes, ``export`` without an image)."""


class EngineError(TargetError):
    """No container engine was found, or the one found cannot run containers here."""


class ImageBuildError(TargetError):
    """Building a container image (base image or service image) failed; the hint carries the log's tail."""


class DeploymentNotFound(NbdeployError):
    """No deployment (or version) by that name in the registry."""


class PredictionError(NbdeployError):
    """The service refused or failed a prediction; ``status`` is the HTTP status."""

    def __init__(self, message: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class VerificationError(CaptureError):
    """The artifact does not load, or does not predict as in the session, from its requirements alone."""


class EdgeExportError(NbdeployError):
    """The model cannot become an edge (ONNX) bundle, or the bundle does not predict as the session does."""


class PromotionRefused(UsageError):
    """A candidate broke the promotion rules: ``failures`` names each rule broken, ``comparison`` is the evidence
    (``nbdeploy.compare(name)``: the Comparison of the candidate with the live version). Nothing was switched."""

    def __init__(self, name: str, version: int, failures: list[object], comparison: object = None) -> None:
        shown = "; ".join(str(f) for f in failures) or "a rule failed"
        super().__init__(
            f"promotion of '{name}' v{version} refused: {shown}",
            hint="look at the comparison (err.comparison); promote(force=True) overrides the rules, audited",
        )
        self.name = name
        self.version = version
        self.failures = list(failures)
        self.comparison = comparison
