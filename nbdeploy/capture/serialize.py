"""Serialise the live object with cloudpickle, recording every module it references.

Notebook code (``__main__``) is pickled by value by cloudpickle itself; modules that are plain
files next to the notebook (not an installed distribution) are registered by value too, so the
service needs nothing that is not on PyPI. Notebook functions behind a decorator whose wrapper pickles
by name (``functools.lru_cache``/``cache``) travel by value too: the wrapper is rebuilt around the
function sent by value; a notebook object that would still pickle as a reference to its name is refused
while pickling, naming it. When pickling fails, the object graph is walked to name the smallest member
that cannot be pickled (``model.steps[1][1]._lock``). ``LoadCheck``/``loads_elsewhere`` unpickle the bytes
in a fresh interpreter, without the notebook's ``__main__`` (at capture when ``NBDEPLOY_LOAD_CHECK=1``).
The pickler also records the numeric numpy buffers it writes, so the secret scan can skip them.
"""

from __future__ import annotations

import functools
import io
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import threading
import types
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import cloudpickle

from ..errors import CaptureError
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


def _travels_by_value(obj: Any) -> bool:
    """Whether a reference to ``obj`` by module and name would fail where the service loads it: it lives in
    ``__main__`` (the notebook), in a module sent by value, or cannot be found again under its name."""
    mod = getattr(obj, "__module__", None)
    if not isinstance(mod, str) or mod == "__main__":
        return True
    module = sys.modules.get(mod)
    if module is None or mod.partition(".")[0] in cloudpickle.list_registry_pickle_by_value():
        return True
    found: Any = module
    for part in str(getattr(obj, "__qualname__", "")).split("."):
        found = getattr(found, part, None)
    return found is not obj


class _LruDecorator:
    """Stands for ``functools.lru_cache(maxsize, typed)`` in a pickle: loads as the decorator itself."""

    def __init__(self, maxsize: int | None, typed: bool) -> None:
        self.args = (maxsize, typed)

    def __call__(self, fn: Any) -> Any:  # what it is at load; pickle wants a callable here
        return functools.lru_cache(*self.args)(fn)


_WRAPPER_KEYS = {"cache_parameters", "__module__", "__name__", "__qualname__", "__doc__", "__annotations__"}


def _lru_cache_reduce(obj: Any) -> tuple[Any, ...]:
    """Rebuild an ``lru_cache``/``cache`` wrapper by applying ``lru_cache(maxsize, typed)`` to its function,
    which cloudpickle sends by value: ``lru_cache(maxsize, typed)(function)`` at load."""
    params = obj.cache_parameters()
    extra = {k: v for k, v in vars(obj).items() if k not in _WRAPPER_KEYS and k != "__wrapped__"}
    rv: tuple[Any, ...] = (_LruDecorator(params["maxsize"], params["typed"]), (obj.__wrapped__,))
    return (*rv, extra) if extra else rv


def _by_name(obj: Any) -> bool:
    """An object that pickle would save as a global reference (its ``__reduce_ex__`` answers a name)."""
    try:
        return isinstance(obj.__reduce_ex__(_PROTOCOL), str)
    except Exception:
        return False


def _notebook_type(cls: type) -> bool:
    """A class defined in the notebook or in a module sent by value: cloudpickle sends it by value."""
    mod = getattr(cls, "__module__", None)
    return mod == "__main__" or (
        isinstance(mod, str) and mod.partition(".")[0] in cloudpickle.list_registry_pickle_by_value()
    )


def _custom_reduce(cls: type) -> bool:
    return cls.__reduce_ex__ is not object.__reduce_ex__ or cls.__reduce__ is not object.__reduce__


def _by_name_error(obj: Any) -> CaptureError:
    """A notebook object that pickles as a reference to its name: only the notebook's ``__main__`` has it."""
    name = obj.__reduce_ex__(_PROTOCOL)
    module = getattr(obj, "__module__", None) or "__main__"
    return load_error(f"AttributeError: Can't get attribute '{name}' on <module '{module}'> (pickled by name)")


def _wrapped_name(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__)


class _RecordingPickler(cloudpickle.Pickler):
    """A cloudpickle Pickler that notes the module of everything it meets, and the numeric buffers it writes
    (so the secret scan can skip them)."""

    def __init__(self, file: io.BytesIO, seen: set[str], numeric: set[tuple[int, bytes]] | None = None) -> None:
        super().__init__(file, protocol=_PROTOCOL)
        self._seen = seen
        self._numeric = numeric if numeric is not None else set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _LruDecorator):
            return functools.lru_cache, obj.args
        if isinstance(obj, _LRU_WRAPPER) and _travels_by_value(obj):
            self._seen.add("functools")
            return _lru_cache_reduce(obj)
        if (
            not isinstance(obj, (type, types.FunctionType))
            and "__wrapped__" in (_instance_dict(obj) or {})
            and _by_name(obj)
            and _travels_by_value(obj)
        ):
            name = _wrapped_name(obj)
            raise CaptureError(
                f"notebook function '{name}' is wrapped in a {type(obj).__module__}.{type(obj).__qualname__}, "
                f"which pickles by name: the service would fail to start with \"Can't get attribute '{name}'\"",
                hint=f"apply the decorator inside the model (wrap '{name}' when predict runs), or use a "
                "decorator written in the notebook (functools.wraps) or functools.lru_cache",
            )
        if _notebook_type(type(obj)) and _custom_reduce(type(obj)) and _by_name(obj):
            raise _by_name_error(obj)
        _note_numeric(obj, self._numeric)
        if isinstance(obj, types.ModuleType):
            self._seen.add(obj.__name__)
        elif isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            mod = getattr(obj, "__module__", None)
            if isinstance(mod, str):
                self._seen.add(mod)
        else:
            self._seen.add(type(obj).__module__)
        return super().reducer_override(obj)


_LRU_WRAPPER = type(functools.lru_cache(lambda: None))
_NUMERIC_KINDS = "biufcmM"
_BUFFER_MIN = 4096  # smaller buffers cost nothing to scan
_HEAD = 64


def _instance_dict(obj: Any) -> dict[str, Any] | None:
    try:
        d = object.__getattribute__(obj, "__dict__")
    except Exception:
        return None
    return d if isinstance(d, dict) else None


def _note_numeric(obj: Any, numeric: set[tuple[int, bytes]]) -> None:
    """Remember a numeric numpy array's buffer as pickle writes it (memory order: F if only F-contiguous)."""
    np = sys.modules.get("numpy")
    if np is None or type(obj) is not np.ndarray or obj.dtype.kind not in _NUMERIC_KINDS or obj.nbytes < _BUFFER_MIN:
        return
    try:
        n = _HEAD // obj.itemsize + 1
        if obj.flags.f_contiguous and not obj.flags.c_contiguous:
            head = np.ravel(obj, order="F")[:n]  # a view: pickle writes the buffer in memory order
        else:
            head = obj.ravel(order="C")[:n] if obj.flags.c_contiguous else obj.flat[:n]  # C order, as tobytes()
        numeric.add((obj.nbytes, np.ascontiguousarray(head).tobytes()[:_HEAD]))
    except Exception:
        return


@dataclass(frozen=True)
class Pickled:
    data: bytes
    referenced: set[str]
    local: list[str]
    numeric_buffers: frozenset[tuple[int, bytes]] = field(default_factory=frozenset)


def dump(obj: Any, root: str = "model") -> Pickled:
    """Pickle ``obj``: the bytes, the modules referenced, the local modules sent by value and the numeric
    buffers written. A failure is a ``CaptureError`` naming the member that cannot be pickled."""
    local = local_modules()
    seen: set[str] = set()
    numeric: set[tuple[int, bytes]] = set()
    buf = io.BytesIO()
    with _by_value(local):
        try:
            _RecordingPickler(buf, seen, numeric).dump(obj)
        except CaptureError:
            raise
        except Exception as exc:
            raise _unpicklable_error(obj, root, exc) from exc
    used_local = sorted(m for m in local if any(s == m or s.startswith(m + ".") for s in seen))
    return Pickled(buf.getvalue(), seen, used_local, frozenset(numeric))


def dumps(obj: Any) -> tuple[bytes, set[str], list[str]]:
    """Pickle ``obj``; return the bytes, the modules referenced and the local modules sent by value."""
    p = dump(obj)
    return p.data, p.referenced, p.local


# -- naming the member that cannot be pickled ------------------------------------------------------------------------

_MAX_DEPTH = 40
_MAX_CHILDREN = 10_000
_ATOMIC = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice)


def _pickle_error(obj: Any) -> BaseException | None:
    try:
        _RecordingPickler(io.BytesIO(), set()).dump(obj)
    except CaptureError:
        return None  # reported by the pickler itself, with its own message
    except Exception as exc:
        return exc
    return None


def _function_children(fn: types.FunctionType, path: str) -> Iterator[tuple[str, Any]]:
    code = fn.__code__
    for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
        try:
            yield f"{path}.__closure__['{var}']", cell.cell_contents
        except ValueError:
            continue
    for i, value in enumerate(fn.__defaults__ or ()):
        yield f"{path}.__defaults__[{i}]", value
    for k, value in (fn.__kwdefaults__ or {}).items():
        yield f"{path}.__kwdefaults__['{k}']", value
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= set(const.co_names)
    for var in sorted(names):
        if var in fn.__globals__:
            yield f"{path}.__globals__['{var}']", fn.__globals__[var]
    for k, value in vars(fn).items():
        yield f"{path}.{k}", value


def _state_children(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Members as pickle sees them: ``__getstate__`` (dict, slots), else ``__dict__``, then ``__reduce_ex__``."""
    state: Any = None
    try:
        state = obj.__getstate__()
    except Exception:
        state = _instance_dict(obj)
    parts = (
        state
        if isinstance(state, tuple) and len(state) == 2 and all(p is None or isinstance(p, dict) for p in state)
        else (state,)
    )
    yielded = False
    for part in parts:
        if isinstance(part, dict):
            for k, v in islice(part.items(), _MAX_CHILDREN):
                yield (f"{path}.{k}" if isinstance(k, str) and k.isidentifier() else f"{path}[{k!r}]"), v
                yielded = True
        elif part is not None:
            yield f"{path}.__getstate__()", part
            yielded = True
    if yielded:
        return
    try:
        rv = obj.__reduce_ex__(_PROTOCOL)
    except Exception:
        return
    if isinstance(rv, tuple) and len(rv) > 1 and isinstance(rv[1], tuple):
        for i, arg in enumerate(rv[1]):
            if arg is not obj and type(arg) is not type:
                yield f"{path}.__reduce__()[1][{i}]", arg


def _children(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        if obj.dtype.kind == "O":
            for i, v in enumerate(islice(obj.flat, _MAX_CHILDREN)):
                yield f"{path}.flat[{i}]", v
        return
    if isinstance(obj, types.FunctionType):
        yield from _function_children(obj, path)
    elif isinstance(obj, dict):
        for k, v in islice(obj.items(), _MAX_CHILDREN):
            yield f"{path}[{k!r}]", v
    elif isinstance(obj, (list, tuple, deque)):
        for i, v in enumerate(islice(obj, _MAX_CHILDREN)):
            yield f"{path}[{i}]", v
    elif isinstance(obj, (set, frozenset)):
        for v in islice(obj, _MAX_CHILDREN):
            yield f"{path}{{{v!r:.40}}}", v
    elif isinstance(obj, functools.partial):
        yield f"{path}.func", obj.func
        for i, v in enumerate(obj.args):
            yield f"{path}.args[{i}]", v
        for k, v in obj.keywords.items():
            yield f"{path}.keywords['{k}']", v
    elif isinstance(obj, types.MethodType):
        yield f"{path}.__func__", obj.__func__
        yield f"{path}.__self__", obj.__self__
    elif isinstance(obj, (staticmethod, classmethod)):
        yield f"{path}.__func__", obj.__func__
    elif isinstance(obj, property):
        for a in ("fget", "fset", "fdel"):
            if getattr(obj, a) is not None:
                yield f"{path}.{a}", getattr(obj, a)
    elif isinstance(obj, type):
        if _travels_by_value(obj):
            for k, v in list(vars(obj).items()):
                if k not in ("__dict__", "__weakref__", "__module__", "__doc__", "__qualname__"):
                    yield f"{path}.{k}", v
    elif isinstance(obj, _LRU_WRAPPER):
        yield f"{path}.__wrapped__", obj.__wrapped__
    elif not isinstance(obj, types.ModuleType):
        yield f"{path}.__class__", type(obj)
        yield from _state_children(obj, path)


def find_unpicklable(obj: Any, root: str = "model") -> tuple[str, Any, BaseException] | None:
    """The smallest member of ``obj`` that cannot be pickled: (path, member, its error); None if ``obj`` pickles.

    Walks on failure only, depth first along failing members, bounded in depth and with a visited set."""
    err = _pickle_error(obj)
    if err is None:
        return None
    path, cur, visited = root, obj, {id(obj)}
    for _ in range(_MAX_DEPTH):
        for child_path, child in islice(_children_safe(cur, path), _MAX_CHILDREN):
            if isinstance(child, _ATOMIC) or id(child) in visited or _numbers(child):
                continue
            visited.add(id(child))
            child_err = _pickle_error(child)
            if child_err is not None:
                path, cur, err = child_path, child, child_err
                break
        else:
            break
    return path, cur, err


def _numbers(obj: Any) -> bool:
    """A numpy array of numbers: it always pickles, and pickling it again to check would cost its size."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray) and obj.dtype.kind in _NUMERIC_KINDS


def _children_safe(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    try:
        yield from list(islice(_children(obj, path), _MAX_CHILDREN))
    except Exception:
        return


_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("lock", "rlock", "condition", "semaphore", "event", "thread", "queue"),
        "leave it out of the pickled state with __getstate__ and create it again in __setstate__",
    ),
    (
        (
            "connection",
            "cursor",
            "socket",
            "engine",
            "session",
            "client",
            "textiowrapper",
            "bufferedreader",
            "bufferedwriter",
            "fileio",
            "bufferedrandom",
        ),
        "open it inside predict (or reopen it in __setstate__) instead of keeping it open on the model; "
        "leave it out of the pickled state with __getstate__",
    ),
    (("generator", "coroutine", "iterator"), "materialise it before capturing (list(...)), or create it in predict"),
)


def _unpicklable_error(obj: Any, root: str, exc: BaseException) -> CaptureError:
    try:
        found = find_unpicklable(obj, root)
    except Exception:
        found = None
    path, member, err = found if found else (root, obj, exc)
    what = type(member)
    kind = f"{what.__module__}.{what.__qualname__}" if what.__module__ != "builtins" else what.__qualname__
    low = what.__qualname__.lower()
    hint = next((h for words, h in _HINTS if any(w in low for w in words)), None)
    hint = hint or (
        "leave it out of the pickled state with __getstate__ (and rebuild it in __setstate__), "
        "or create it inside predict"
    )
    return CaptureError(
        f"the model cannot be serialised: {type(err).__name__}: {str(err)[:300]} (at {path}, a {kind})",
        hint=f"{path}: {hint}",
    )


# -- the bytes must load where the notebook's __main__ is not ---------------------------------------------------------

_LOAD = """
import pickle, sys
try:
    pickle.loads(sys.stdin.buffer.read())
except BaseException as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}")
    sys.exit(3)
"""
_MISSING_ATTR = re.compile(r"Can't get attribute '([^']+)' on <module '([^']+)'")
_MISSING_MOD = re.compile(r"No module named '([^']+)'")


class LoadCheck:
    """Unpickle the bytes in a fresh interpreter (its own ``__main__``, not the notebook's; the session's import
    path without the notebook's folder), in the background: ``result()`` waits and raises ``CaptureError`` if
    they do not load; ``cancel()`` kills it."""

    def __init__(self, data: bytes) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        here = {"", ".", os.getcwd()}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p not in here and os.path.isdir(p))
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _LOAD],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=tempfile.gettempdir(),
            env=env,
        )
        self._err = b""
        self._thread = threading.Thread(target=self._talk, args=(data,), daemon=True)
        self._thread.start()

    def _talk(self, data: bytes) -> None:
        try:
            _, self._err = self._proc.communicate(data, timeout=300)
        except Exception:
            self._proc.kill()
            self._proc.wait()

    def cancel(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._thread.join()

    def result(self) -> None:
        self._thread.join()
        if self._proc.returncode == 0:
            return
        raise load_error(self._err.decode(errors="replace").strip() or f"exit status {self._proc.returncode}")


def load_error(message: str) -> CaptureError:
    """What a failure to unpickle in a fresh interpreter means for the user."""
    if m := _MISSING_ATTR.search(message):
        name, module = m.groups()
        where = "the notebook" if module == "__main__" else f"module '{module}'"
        return CaptureError(
            f"'{name}' from {where} is pickled by reference (by its name), so the service cannot load it "
            f"({message[:300]})",
            hint=f"'{name}' pickles as its name (a decorator's wrapper, or a __reduce__ returning a name): define it "
            "without that decorator or apply the decorator inside predict (functools.wraps and functools.lru_cache "
            "travel), or make __reduce__ return a constructor and its arguments",
        )
    if m := _MISSING_MOD.search(message):
        return CaptureError(
            f"the model refers to module '{m.group(1)}' by name, and a fresh interpreter cannot import it "
            f"({message[:300]})",
            hint=f"install '{m.group(1).split('.')[0]}' as a package, or keep it next to the notebook",
        )
    return CaptureError(f"the serialised model does not load in a fresh interpreter: {message[-500:]}")


def loads_elsewhere(data: bytes) -> None:
    """Unpickle ``data`` in a fresh interpreter; raise ``CaptureError`` if it does not load."""
    LoadCheck(data).result()
