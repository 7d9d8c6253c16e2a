"""Refuse to capture credentials: keys in globals, closures, defaults, attributes, or the pickled bytes.

Two views, because each misses what the other sees: the named strings reachable from the object
(so the error can name the variable), and the serialised bytes (anything that travels, by pattern
or by being the value of a secret-looking environment variable).
"""

from __future__ import annotations

import math
import os
import re
import types
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import SecretFoundError

#: Well-known credential shapes (provider prefixes and key headers).
PATTERNS: dict[str, re.Pattern[str]] = {
    "AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{60,}"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "OpenAI-style key": re.compile(r"\bsk-(proj-)?[A-Za-z0-9_-]{20,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Stripe key": re.compile(r"\b(sk|rk)_(live|test)_[0-9A-Za-z]{16,}"),
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA |PGP )?PRIVATE KEY( BLOCK)?-----"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}
SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credential|auth)", re.I
)
_MIN_LEN = 12


@dataclass(frozen=True)
class Finding:
    name: str  # the variable, attribute or environment variable
    where: str  # how it was reached, e.g. "global of function 'score'"
    what: str  # which rule matched

    def message(self) -> str:
        return f"'{self.name}' ({self.where}) looks like a secret: {self.what}"


def entropy(value: str) -> float:
    """Shannon entropy in bits per character: random keys score high, words and paths low."""
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _classify(name: str, value: str) -> str | None:
    for label, pat in PATTERNS.items():
        if pat.search(value):
            return label
    if SECRET_NAME.search(name) and len(value) >= _MIN_LEN and " " not in value and entropy(value) >= 3.0:
        return f"{len(value)} random-looking characters in a variable named like a secret"
    return None


def _named_strings(obj: Any, limit: int = 20000) -> Iterator[tuple[str, str, str]]:
    """(name, where, value) for strings reachable from ``obj`` that would be pickled with it."""
    todo: list[tuple[Any, str, str]] = [(obj, "the model", "the model")]
    seen: set[int] = set()
    while todo and len(seen) < limit:
        cur, name, where = todo.pop()
        if isinstance(cur, str):
            yield name, where, cur
            continue
        if isinstance(cur, bytes):
            yield name, where, cur.decode("latin-1")
            continue
        if id(cur) in seen or isinstance(cur, (int, float, bool, type(None), types.ModuleType)):
            continue
        seen.add(id(cur))
        if isinstance(cur, types.FunctionType):
            todo.extend(_function_parts(cur))
        elif isinstance(cur, dict):
            todo.extend((v, str(k), where) for k, v in cur.items() if isinstance(k, str))
        elif isinstance(cur, (list, tuple, set, frozenset)):
            todo.extend((v, name, where) for v in cur)
        elif isinstance(cur, type):
            if cur.__module__ == "__main__":
                todo.extend((v, k, f"attribute of class '{cur.__name__}'") for k, v in vars(cur).items())
        elif hasattr(cur, "__dict__") and not _is_data(cur):
            todo.append((type(cur), name, where))
            todo.extend((v, k, f"attribute of {type(cur).__name__} object") for k, v in vars(cur).items())


def _is_data(obj: Any) -> bool:
    mod = type(obj).__module__
    return mod.startswith(("numpy", "pandas", "scipy"))


def _function_parts(fn: types.FunctionType) -> Iterator[tuple[Any, str, str]]:
    label = f"function '{fn.__name__}'"
    code = fn.__code__
    defaults = fn.__defaults__ or ()
    args = code.co_varnames[: code.co_argcount][-len(defaults) :] if defaults else ()
    for arg, value in zip(args, defaults, strict=False):
        yield value, arg, f"default argument of {label}"
    for arg, value in (fn.__kwdefaults__ or {}).items():
        yield value, arg, f"default argument of {label}"
    for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
        try:
            yield cell.cell_contents, var, f"closure variable of {label}"
        except ValueError:
            continue
    if fn.__module__ in ("__main__", None) or fn.__globals__.get("__name__") == "__main__":
        for var in _global_names(code):
            if var in fn.__globals__:
                yield fn.__globals__[var], var, f"global used by {label}"
    for const in code.co_consts:
        if isinstance(const, str):
            yield const, "a string literal", f"code of {label}"


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _secret_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8}


def scan(obj: Any, payload: bytes, allow: list[str] | None = None) -> list[Finding]:
    """Every credential-looking value that would travel with ``obj``; ``allow`` names false positives."""
    allowed = set(allow or [])
    findings: dict[str, Finding] = {}
    env = _secret_env()
    env_values = {v: k for k, v in env.items()}
    for name, where, value in _named_strings(obj):
        if name in allowed or name in findings:
            continue
        if value in env_values:
            what = f"the value of environment variable '{env_values[value]}'"
        else:
            what = _classify(name, value)
        if what:
            findings[name] = Finding(name, where, what)
    text = payload.decode("latin-1")
    for var, value in env.items():
        if var not in allowed and value in text and not any(f.what.endswith(f"'{var}'") for f in findings.values()):
            findings[var] = Finding(var, "environment variable", "its value is inside the serialised model")
    for label, pat in PATTERNS.items():
        match = pat.search(text)
        if match and label not in allowed and not any(f.what == label for f in findings.values()):
            findings[label] = Finding(label, "serialised bytes", f"{label} pattern in the pickled model")
    return list(findings.values())


def check(obj: Any, payload: bytes, allow: list[str] | None = None) -> None:
    """Raise ``SecretFoundError`` naming each credential found; nothing has been written yet."""
    found = scan(obj, payload, allow)
    if found:
        first = found[0]
        more = "; ".join(f.message() for f in found[1:])
        raise SecretFoundError(
            f"refusing to capture: {first.message()}" + (f"; also {more}" if more else ""),
            hint=f"read it at serving time, e.g. from os.environ, instead of capturing it; "
            f"if it is not a secret, pass allow_secrets=['{first.name}']",
        )
