"""Where nbdeploy keeps its state: ``NBDEPLOY_HOME`` (default ``~/.nbdeploy``)."""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from .errors import UsageError

#: Deployment names: DNS labels. Always ``fullmatch``: ``$`` also matches before a trailing newline.
NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def suggest_name(name: str) -> str | None:
    """A valid name close to ``name``: ``Wine_Quality`` -> ``wine-quality``, ``'wine v2'`` -> ``wine-v2``."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:63].strip("-")
    return text if text and NAME.fullmatch(text) else None


def home() -> Path:
    """The state folder, owner-only: it holds API keys and request logs with users' inputs.

    A folder that already exists with wider permissions (say 0755, made by hand) is narrowed to 0700.
    """
    path = Path(os.environ.get("NBDEPLOY_HOME") or Path.home() / ".nbdeploy").expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def name_dir(name: str) -> Path:
    """``deployments/NAME``: refuses a name that is not a deployment name (no path can be smuggled in)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(f"not a deployment name: {name!r}")
    path = home() / "deployments" / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def bento_store() -> Path:
    return home() / "bentos"


def deployment_dir(name: str, version: int) -> Path:
    path = name_dir(name) / f"v{version}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
