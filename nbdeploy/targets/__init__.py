"""Targets run a bento somewhere. Each subclasses ``Target`` and is found by name in the registry of targets below.

The built-in four are registered by import path and imported on first use, so an unused target costs nothing.
``register_target`` adds one (a class, or ``"module:Class"`` imported when first used), as papermill registers its
engines; installed packages can offer theirs under the ``nbdeploy.targets`` entry point group.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

from ..errors import NotSupported, TargetError, TargetOptionError, UsageError
from .base import Running, Target

_BUILTIN: dict[str, str] = {
    "local": "nbdeploy.targets.local:LocalTarget",
    "container": "nbdeploy.targets.container:ContainerTarget",
    "edge": "nbdeploy.targets.edge:EdgeTarget",
    "kubernetes": "nbdeploy.targets.kubernetes.target:KubernetesTarget",
}
ENTRY_POINT_GROUP = "nbdeploy.targets"
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_targets: dict[str, type[Target] | str] = dict(_BUILTIN)
_entry_points_read = False


def _path_of(target: type[Target] | str) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def register_target(name: str, target: type[Target] | str, *, replace: bool = False) -> None:
    """Make ``target`` (a ``Target`` subclass, or ``"module:Class"`` imported on first use) deployable as ``name``.

    Registering the same target again is a no-op; another one under a taken name needs ``replace=True``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"invalid target name {name!r}", hint="lowercase letters, digits, '-' and '_'")
    if isinstance(target, str):
        if ":" not in target:
            raise UsageError(f"target path {target!r} is not 'module:Class'")
    elif not (isinstance(target, type) and issubclass(target, Target)):
        raise UsageError(f"{target!r} is not a subclass of nbdeploy.targets.Target", hint="subclass Target")
    _read_entry_points()
    taken = _targets.get(name)
    if taken is not None and _path_of(taken) != _path_of(target) and not replace:
        raise UsageError(f"target '{name}' is registered already", hint="pass replace=True to replace it")
    _targets[name] = target


def unregister_target(name: str) -> None:
    """Forget a registered target; a built-in one that was replaced comes back."""
    if name not in _targets:
        raise UsageError(f"no target '{name}' is registered")
    if name in _BUILTIN:
        _targets[name] = _BUILTIN[name]
    else:
        del _targets[name]


def available_targets() -> list[str]:
    """The names ``deploy(target=...)`` takes: the built-in ones first, then those registered."""
    _read_entry_points()
    return list(_targets)


def target_class(name: str) -> type[Target]:
    """The class registered as ``name``, imported now if it was registered by path."""
    _read_entry_points()
    try:
        found = _targets[name]
    except KeyError:
        raise TargetError(f"unknown target '{name}'", hint=f"choose one of: {', '.join(_targets)}") from None
    if isinstance(found, str):
        module, _, attr = found.partition(":")
        cls: Any = importlib.import_module(module)
        for part in attr.split("."):  # Class, or Outer.Inner
            cls = vars(cls).get(part) if cls is not None else None
        if not (isinstance(cls, type) and issubclass(cls, Target)):
            raise TargetError(f"target '{name}' ({found}) is not a subclass of nbdeploy.targets.Target")
        _targets[name] = found = cls
    return found


def get_target(name: str, **options: Any) -> Target:
    """The target called ``name`` made with ``options``; an option it does not take is refused, naming who takes it."""
    cls = target_class(name)
    unknown = [o for o in options if o not in cls.options()]
    if unknown:
        raise _refusal(name, cls, unknown)
    return cls(**options)


def merge_options(named: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options ``deploy()`` passes on: its target keywords that were given (not None), then ``target_options``."""
    if extra is not None and not isinstance(extra, Mapping):
        raise UsageError(f"target_options must be a dict, got {type(extra).__name__}")
    options = {k: v for k, v in named.items() if v is not None}
    for key, value in (extra or {}).items():
        if key in options:
            raise UsageError(f"option {key} is given twice: as {key}= and in target_options", hint="give it once")
        options[str(key)] = value
    return options


def _loaded() -> dict[str, type[Target]]:
    """Every registered target that imports; one that does not must not hide the others from an error message."""
    out = {}
    for name in available_targets():
        try:
            out[name] = target_class(name)
        except Exception:  # an optional dependency missing, a broken plugin: leave it out of the hint
            continue
    return out


def supporting(verb: str) -> list[str]:
    """The targets that implement ``verb`` (``scale``, ``export``, ``describe``) instead of the base's refusal."""
    return [n for n, cls in _loaded().items() if next(k for k in cls.__mro__ if verb in vars(k)) is not Target]


def _refusal(name: str, cls: type[Target], unknown: list[str]) -> TargetOptionError:
    takers = _loaded()
    groups: dict[tuple[str, ...], list[str]] = {}
    for option in unknown:
        groups.setdefault(tuple(n for n, c in takers.items() if option in c.options()), []).append(option)
    parts = []
    for where, opts in groups.items():
        listed = ", ".join(opts)
        if where:
            verb = "apply" if len(opts) > 1 else "applies"
            parts.append(f"{listed} only {verb} to " + " or ".join(f"target='{w}'" for w in where))
        else:
            parts.append(f"no target takes {listed}")
    parts.append(f"target '{name}' takes " + (", ".join(sorted(cls.options())) or "no options"))
    return TargetOptionError(f"target '{name}' does not take {', '.join(unknown)}", hint="; ".join(parts))


def _read_entry_points() -> None:
    """Targets installed packages offer (``[project.entry-points."nbdeploy.targets"]``), once, by path."""
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if _NAME.fullmatch(ep.name) and ":" in ep.value:
            _targets.setdefault(ep.name, ep.value)


__all__ = [
    "NotSupported",
    "Running",
    "Target",
    "TargetOptionError",
    "available_targets",
    "get_target",
    "merge_options",
    "register_target",
    "target_class",
    "unregister_target",
]
