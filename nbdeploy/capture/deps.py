"""Map referenced modules to installed distributions and pin their whole dependency closure.

Pins are the versions installed in the session, so the service resolves exactly what the
notebook ran with (BentoML's own locking would pick the newest compatible versions instead).
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement

from ..errors import CaptureError

#: What the runtime inside the bento imports, whatever the model needs.
RUNTIME_DISTRIBUTIONS = ("numpy", "pandas", "cloudpickle")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@lru_cache(maxsize=1)
def _module_owners() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distributions_for(modules: set[str]) -> set[str]:
    """Distributions that provide the given (dotted) module names; stdlib and ``__main__`` skipped."""
    owners = _module_owners()
    dists: set[str] = set()
    for mod in modules:
        top = mod.partition(".")[0]
        if not top or top in sys.stdlib_module_names or top in ("__main__", "builtins"):
            continue
        for dist in owners.get(top, []):
            dists.add(_canon(dist))
    return dists


def _requires(dist: metadata.Distribution, extras: set[str]) -> list[tuple[str, set[str]]]:
    env = default_environment()
    out = []
    for line in dist.requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None:
            envs = [dict(env, extra=e) for e in (extras or {""})]
            if not any(req.marker.evaluate(e) for e in envs):
                continue
        out.append((_canon(req.name), set(req.extras)))
    return out


def pin_closure(roots: set[str]) -> list[str]:
    """``name==version`` for every root and everything it requires, as installed now."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(r, set()) for r in sorted(roots)]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (name, frozenset(extras))
        if key in done:
            continue
        done.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise CaptureError(
                f"package '{name}' is needed by the model but is not installed in this session",
                hint="install it, or pass requirements=[...] naming it",
            ) from None
        pins[name] = f"{_canon(dist.metadata['Name'])}=={dist.version}"
        todo.extend(_requires(dist, extras))
    return sorted(pins.values())


def requirements_for(modules: set[str], extra: list[str] | None = None) -> list[str]:
    """The pinned requirements for an object that referenced ``modules``."""
    roots = distributions_for(modules) | set(RUNTIME_DISTRIBUTIONS)
    roots.discard("bentoml")
    pins = pin_closure(roots)
    if extra:
        named = {_canon(Requirement(r).name) for r in extra}
        pins = [p for p in pins if p.partition("==")[0] not in named] + list(extra)
    return pins
