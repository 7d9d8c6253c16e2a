"""Serialise the live object with cloudpickle, recording every module it references.

Notebook code (``__main__``) is pickled by value by cloudpickle itself; modules that are plain
files next to the notebook (not an installed distribution) are registered by value too, so the
service needs nothing that is not on PyPI.
"""

from __future__ import annotations

import io
import sys
import sysconfig
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle

from .deps import module_owners

_PROTOCOL = 5


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = {paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]}
    roots.update(p for p in sys.path if "site-packages" in p or "dist-packages" in p)
    return [Path(p).resolve() for p in roots if p]


def local_modules() -> dict[str, types.ModuleType]:
    """Top-level modules loaded from files that no installed distribution owns."""
    owned = module_owners()
    roots = _installed_roots()
    found: dict[str, types.ModuleType] = {}
    for name, mod in list(sys.modules.items()):
        top = name.partition(".")[0]
        if top != name or top in owned or top in sys.stdlib_module_names or top == "__main__":
            continue
        file = getattr(mod, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if any(path.is_relative_to(root) for root in roots):
            continue
        if top.startswith(("nbdeploy", "_pytest", "pytest", "IPython", "ipykernel")):
            continue
        found[top] = mod
    return found


@contextmanager
def _by_value(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    registered = []
    for mod in modules.values():
        try:
            cloudpickle.register_pickle_by_value(mod)
            registered.append(mod)
        except ValueError:
            continue
    try:
        yield
    finally:
        for mod in registered:
            cloudpickle.unregister_pickle_by_value(mod)


class _RecordingPickler(cloudpickle.Pickler):
    """A cloudpickle Pickler that notes the module of everything it meets."""

    def __init__(self, file: io.BytesIO, seen: set[str]) -> None:
        super().__init__(file, protocol=_PROTOCOL)
        self._seen = seen

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            self._seen.add(obj.__name__)
        elif isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            mod = getattr(obj, "__module__", None)
            if isinstance(mod, str):
                self._seen.add(mod)
        else:
            self._seen.add(type(obj).__module__)
        return super().reducer_override(obj)


def dumps(obj: Any) -> tuple[bytes, set[str], list[str]]:
    """Pickle ``obj``; return the bytes, the modules referenced and the local modules sent by value."""
    local = local_modules()
    seen: set[str] = set()
    buf = io.BytesIO()
    with _by_value(local):
        _RecordingPickler(buf, seen).dump(obj)
    used_local = sorted(m for m in local if any(s == m or s.startswith(m + ".") for s in seen))
    return buf.getvalue(), seen, used_local
