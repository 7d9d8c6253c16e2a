"""Where a model came from: who, where, when, with which Python and which notebook."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import sys
from datetime import UTC, datetime
from typing import Any


def notebook_path() -> str | None:
    """The running notebook's path when the kernel knows it (JupyterLab and VS Code set these)."""
    for var in ("JPY_SESSION_NAME", "__vsc_ipynb_file__"):
        if os.environ.get(var):
            return os.environ[var]
    main = sys.modules.get("__main__")
    path = getattr(main, "__vsc_ipynb_file__", None) or getattr(main, "__file__", None)
    return str(path) if path else None


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


def record() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {
        "user": user,
        "host": socket.gethostname(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": python_version(),
        "platform": platform.platform(),
        "notebook": notebook_path(),
    }
