"""Where nbdeploy keeps its state: ``NBDEPLOY_HOME`` (default ``~/.nbdeploy``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    path = Path(os.environ.get("NBDEPLOY_HOME") or Path.home() / ".nbdeploy").expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def bento_store() -> Path:
    return home() / "bentos"


def deployment_dir(name: str, version: int) -> Path:
    path = home() / "deployments" / name / f"v{version}"
    path.mkdir(parents=True, exist_ok=True)
    return path
