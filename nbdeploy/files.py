"""Files other processes read while we write them: the endpoint's routing, the accepted key hashes, the maintenance
scheduler's state. Written whole or not at all, owner-only."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, data: bytes | str, before_replace: Callable[[str], None] | None = None) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the old file or the new one, never half of one) and
    owner-only (0600: the file may hold secrets' hashes or a deployment's plans). ``before_replace(tmp)`` may adjust
    the new file (its owner) before it takes the old one's place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
