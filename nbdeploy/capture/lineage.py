"""Where a model came from: who, where, when, which notebook and cells, which commit, which Python."""

from __future__ import annotations

import getpass
import hashlib
import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def notebook_path() -> str | None:
    """The running notebook's path when the kernel knows it (JupyterLab and VS Code set these)."""
    main = sys.modules.get("__main__")
    for candidate in (
        getattr(main, "__vsc_ipynb_file__", None),
        os.environ.get("JPY_SESSION_NAME"),
        getattr(main, "__file__", None),
    ):
        if candidate and str(candidate).endswith((".ipynb", ".py")):
            return str(Path(candidate).resolve()) if Path(candidate).exists() else str(candidate)
    return None


def executed_cells_hash() -> str | None:
    """sha256 of the source of the cells executed so far in this kernel (IPython's ``In``), if any."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    cells = shell.user_ns.get("In") if shell is not None else None
    if not cells:
        return None
    return hashlib.sha256("\n\x00".join(cells).encode()).hexdigest()


def git_state(path: str | None) -> dict[str, Any]:
    """Commit and dirty flag of the repository holding ``path`` (or the working directory)."""
    where = Path(path).parent if path and Path(path).exists() else Path.cwd()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if not commit:
            return {}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": bool(dirty)}


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record() -> dict[str, Any]:
    nb = notebook_path()
    return {
        "user": user(),
        "host": socket.gethostname(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": python_version(),
        "platform": platform.platform(),
        "notebook": nb,
        "cells_sha256": executed_cells_hash(),
        **git_state(nb),
    }
