"""Map referenced modules to installed distributions and pin their whole dependency closure.

Pins are the versions installed in the session, so the service resolves exactly what the
notebook ran with (BentoML's own locking would pick the newest compatible versions instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement

from ..errors import CaptureError

#: What the runtime inside the bento imports, whatever the model needs. uvicorn (under BentoML) serves with uvloop
#: and httptools when they are installed, and with asyncio and h11 otherwise: about 10 % more requests a second
#: and 10 % less one-row latency, measured here (bench/run.py), so every image gets them.
RUNTIME_DISTRIBUTIONS = ("numpy", "pandas", "cloudpickle", "uvloop", "httptools")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_owners_cache: tuple[tuple[tuple[str, int], ...], dict[str, list[str]]] | None = None


def module_owners() -> dict[str, list[str]]:
    """``importlib.metadata.packages_distributions()``, cached until an install changes sys.path's folders.

    The scan costs most of a second in a big environment; a folder's mtime changes when a
    distribution is installed into or removed from it, so the cache cannot go stale unnoticed. It is kept on disk
    too (under NBDEPLOY_HOME), so a new kernel's first deploy does not scan again.
    """
    global _owners_cache
    key = tuple((p, _mtime(p) if p.endswith(("site-packages", "dist-packages")) else 0) for p in sys.path)
    cached = _owners_cache
    if cached is None or cached[0] != key:
        owners = _stored_owners(key)
        if owners is None:
            owners = dict(metadata.packages_distributions())
            _store_owners(key, owners)
        cached = _owners_cache = (key, owners)
    return cached[1]


def _owners_file(key: tuple[tuple[str, int], ...]) -> Path:
    from .. import config

    digest = hashlib.sha256(json.dumps([sys.prefix, *key]).encode()).hexdigest()[:24]
    return config.home() / "cache" / f"module-owners-{digest}.json"


def _stored_owners(key: tuple[tuple[str, int], ...]) -> dict[str, list[str]] | None:
    try:
        data = json.loads(_owners_file(key).read_text())
    except (OSError, ValueError):
        return None
    owners = data.get("owners") if isinstance(data, dict) else None
    return owners if isinstance(owners, dict) else None


def _store_owners(key: tuple[tuple[str, int], ...], owners: dict[str, list[str]]) -> None:
    """Written whole to a temporary file, then renamed: a reader never sees half of it. A cache: failures pass."""
    with contextlib.suppress(OSError):
        path = _owners_file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"owners": owners}))
        tmp.replace(path)


def _mtime(path: str) -> int:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return -1


def distributions_for(modules: set[str]) -> set[str]:
    """Distributions that provide the given (dotted) module names; stdlib and ``__main__`` skipped."""
    owners = module_owners()
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
            if not any(req.marker.evaluate(e) for e in envs):  # type: ignore[arg-type]
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


def _origin(name: str) -> str | None:
    """Where a distribution was installed from when that was not an index (PEP 610), else None."""
    dist = metadata.distribution(name)
    raw = dist.read_text("direct_url.json")
    if not raw:
        return None
    info = json.loads(raw)
    url = info.get("url", "")
    if "vcs_info" in info or "dir_info" in info or url.startswith("file:"):
        return url
    return None


def requirements_for(modules: set[str], extra: list[str] | None = None) -> list[str]:
    """The pinned requirements for an object that referenced ``modules``.

    ``extra`` requirements replace the pin of the distribution they name; a distribution installed
    from a local path or a VCS checkout cannot be pinned from PyPI and must be named there.
    """
    roots = distributions_for(modules) | set(RUNTIME_DISTRIBUTIONS)
    roots -= {"bentoml", "nbdeploy"}
    pins = pin_closure(roots)
    named = {_canon(Requirement(r).name) for r in extra or []}
    unpinnable = []
    for pin in pins:
        name, _, version = pin.partition("==")
        origin = _origin(name) if name not in named else None
        if origin:
            unpinnable.append((name, version, origin))
    if unpinnable:
        name, version, origin = unpinnable[0]
        others = f" (also: {', '.join(n for n, _, _ in unpinnable[1:])})" if len(unpinnable) > 1 else ""
        raise CaptureError(
            f"package '{name}' {version} is needed by the model but was installed from {origin}, "
            f"which the service cannot install from PyPI{others}",
            hint=f"name where to get it: requirements=['{name} @ https://.../{name}-{version}-py3-none-any.whl'] "
            f"or requirements=['{name}=={version}'] if it is on your index, or build a wheel and pass "
            f"wheels=['dist/{name}-{version}-py3-none-any.whl']",
        )
    return [p for p in pins if p.partition("==")[0] not in named] + list(extra or [])
