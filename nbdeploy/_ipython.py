"""nbdeploy's own errors in IPython: one line and the hint, as IPython shows its ``UsageError``.

A ``PredictionError`` raised deep in the client, or a ``CaptureError`` from the middle of a capture, is a message
for the user, not a bug: the frames above it are noise. ``%tb`` prints the full traceback of the last one, and
``NBDEPLOY_TRACEBACK=1`` turns the one-line form off. Other exceptions are untouched, and a custom handler the
user set first is left alone.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .errors import NbdeployError

TRACEBACK_ENV = "NBDEPLOY_TRACEBACK"


def one_line(exc: BaseException) -> list[str]:
    """What the notebook shows: the error's kind and message, its hint, and how to see the rest."""
    message = exc.message if isinstance(exc, NbdeployError) else str(exc)
    lines = [f"{type(exc).__name__}: {message}"]
    hint = getattr(exc, "hint", None)
    if hint:
        lines.append(f"hint: {hint}")
    lines.append("(%tb shows the full traceback)")
    return lines


def _handler(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
    # %tb reads the last exception from sys; the custom-handler path of IPython does not store it
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    if os.environ.get(TRACEBACK_ENV) == "1":
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    else:
        red, reset = ("\x1b[0;31m", "\x1b[0m") if getattr(shell, "colors", "nocolor").lower() != "nocolor" else ("", "")
        lines = one_line(value)
        stb = [f"{red}{lines[0]}{reset}", *lines[1:]]
    shell._showtraceback(etype, value, stb)  # ipykernel sends it as the cell's error output
    return stb


def install(shell: Any) -> bool:
    """Show nbdeploy's errors in one line in this shell; False if another custom handler is there already."""
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    current = tuple(getattr(shell, "custom_exceptions", ()) or ())
    if current and current != (NbdeployError,):
        return False
    shell.set_custom_exc((NbdeployError,), _handler)
    return True


def install_if_interactive() -> None:
    """At ``import nbdeploy``: only when IPython is already running (a script never imports IPython for this)."""
    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    install(get_ipython())
