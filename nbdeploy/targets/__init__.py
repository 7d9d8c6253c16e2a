"""Targets run a bento somewhere. Each is one module behind the small ``Target`` protocol."""

from __future__ import annotations

from ..errors import TargetError
from .base import Target

_TARGETS = {"local": "nbdeploy.targets.local:LocalTarget"}


def get_target(name: str) -> Target:
    """The target called ``name``, imported lazily so unused targets cost nothing."""
    try:
        module, _, cls = _TARGETS[name].partition(":")
    except KeyError:
        raise TargetError(f"unknown target '{name}'", hint=f"choose one of: {', '.join(_TARGETS)}") from None
    import importlib

    return getattr(importlib.import_module(module), cls)()


__all__ = ["Target", "get_target"]
