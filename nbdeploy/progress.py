"""What a deploy is doing while it runs: the stages (capture, package, start), each with its time.

In a notebook, one output line updated in place as each stage starts and ends, and cleared when the card takes
over (the card keeps the timings). In a terminal, one line on stderr per stage. Silent elsewhere (pytest, pipes),
unless ``NBDEPLOY_PROGRESS=1`` asks for the lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

_DONE, _RUNNING = "✓", "…"


def _notebook_display() -> Any:
    """A display handle in a Jupyter kernel, else None (IPython is imported only if the session already has it)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return None
    from IPython.display import HTML, display

    return display(HTML(""), display_id=True)


class Progress:
    """Stages of one deploy. ``with progress.stage("capture"):`` times a stage and shows it."""

    def __init__(self, what: str, out: Any = None) -> None:
        self.what = what
        self.done: list[tuple[str, float]] = []
        self._handle = _notebook_display()
        forced = os.environ.get("NBDEPLOY_PROGRESS")
        self._lines = out or (
            sys.stderr if forced == "1" or (forced != "0" and self._handle is None and sys.stderr.isatty()) else None
        )

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        started = time.perf_counter()
        self._show(f"{name}{f' ({detail})' if detail else ''}")
        yield
        seconds = time.perf_counter() - started
        self.done.append((name, seconds))
        if self._lines is not None:
            self._lines.write(f"nbdeploy: {self.what}: {name} {seconds:.1f} s\n")
            self._lines.flush()

    def _show(self, running: str) -> None:
        if self._handle is None:
            return
        from IPython.display import HTML

        parts = [f"{_DONE} {n} {s:.1f} s" for n, s in self.done] + [f"{_RUNNING} {running}"]
        style = "font-family:monospace;color:#57606a"
        self._handle.update(HTML(f"<div style='{style}'>{self.what}: {' · '.join(parts)}</div>"))

    def close(self) -> None:
        """Clear the live line: the card that follows shows the timings."""
        if self._handle is not None:
            from IPython.display import HTML

            self._handle.update(HTML(""))
