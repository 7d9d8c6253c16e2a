"""Which modules a model really uses: the ones executed while it predicts, and the ones its code imports.

Pickled references miss imports done inside a function body (``import scipy`` in ``predict``);
tracing one prediction on the sample and reading the import instructions of code sent by value
catches them, the way MLflow records imports while it loads a model.
"""

from __future__ import annotations

import dis
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any


def run_traced(fn: Callable[[Any], Any], data: Any) -> tuple[Any, set[str]]:
    """Call ``fn(data)`` and return its result plus the modules whose code ran during the call."""
    seen: set[str] = set()

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            seen.add(frame.f_globals.get("__name__") or "")
        elif event == "c_call":
            mod = getattr(arg, "__module__", None)
            if isinstance(mod, str):
                seen.add(mod)

    if sys.getprofile() is not None:  # a profiler of the user's is active: leave it alone
        return fn(data), set()
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        out = fn(data)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    seen.discard("")
    return out, seen


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def imported_names(code: types.CodeType) -> set[str]:
    """Module names in ``import`` statements anywhere in ``code`` (nested functions included)."""
    names = set()
    for co in _code_objects(code):
        for ins in dis.get_instructions(co):
            if ins.opname == "IMPORT_NAME" and isinstance(ins.argval, str):
                names.add(ins.argval)
    return names


def functions_in(obj: Any, limit: int = 5000) -> Iterator[types.FunctionType]:
    """Functions reachable from ``obj`` through attributes, containers and class dicts (bounded)."""
    todo: list[Any] = [obj]
    seen: set[int] = set()
    while todo and len(seen) < limit:
        cur = todo.pop()
        if id(cur) in seen or isinstance(cur, (str, bytes, int, float, bool, type(None))):
            continue
        seen.add(id(cur))
        if isinstance(cur, types.FunctionType):
            yield cur
            todo.extend(c.cell_contents for c in cur.__closure__ or () if _filled(c))
            continue
        if isinstance(cur, (list, tuple, set, frozenset)):
            todo.extend(cur)
        elif isinstance(cur, dict):
            todo.extend(cur.values())
        elif isinstance(cur, type):
            if cur.__module__ not in ("builtins",) and not cur.__module__.startswith(("numpy", "pandas")):
                todo.extend(v for k, v in vars(cur).items() if not k.startswith("__"))
        else:
            todo.append(type(cur))
            todo.extend(getattr(cur, "__dict__", {}).values())


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True
