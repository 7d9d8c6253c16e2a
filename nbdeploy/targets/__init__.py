"""Targets run a bento somewhere. Each is one module behind the small ``Target`` protocol."""

from __future__ import annotations

from typing import Any

from ..errors import TargetError
from .base import Target

_TARGETS = {
    "local": "nbdeploy.targets.local:LocalTarget",
    "container": "nbdeploy.targets.container:ContainerTarget",
    "edge": "nbdeploy.targets.edge:EdgeTarget",
    "kubernetes": "nbdeploy.targets.kubernetes.target:KubernetesTarget",
}


def get_target(name: str, **options: Any) -> Target:
    """The target called ``name``, imported lazily so unused targets cost nothing; ``options`` go to its class."""
    try:
        module, _, cls = _TARGETS[name].partition(":")
    except KeyError:
        raise TargetError(f"unknown target '{name}'", hint=f"choose one of: {', '.join(_TARGETS)}") from None
    import importlib
    import inspect

    target_cls = getattr(importlib.import_module(module), cls)
    try:
        inspect.signature(target_cls).bind(**options)
    except TypeError:
        raise TargetError(f"target '{name}' does not take {', '.join(sorted(options))}") from None
    return target_cls(**options)  # type: ignore[no-any-return]


__all__ = ["Target", "get_target"]
