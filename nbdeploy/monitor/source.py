"""What the panel watches: one deployment version, and where its status comes from.

The status has one source, the deployment handle (``nbdeploy.Deployment.status()``): the panel
asks it rather than knowing the targets. Without a handle (a registry ``Record`` or a name) a
``status`` callable can be given; without one the registry's status is shown as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..registry import Record, Registry

StatusFn = Callable[[], str]


class Source(Protocol):
    """What the panel needs of a deployment handle; ``nbdeploy.Deployment`` is one."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    def status(self) -> str:
        """``running``, ``degraded``, ``stopped`` or ``failed``, as of now."""
        ...


@dataclass(frozen=True)
class Watched:
    """One deployment version and its status source (None: the registry record's own status)."""

    name: str
    version: int
    status: StatusFn | None = None

    def read(self, registry: Registry) -> tuple[Record, str]:
        """A fresh registry record and the status to show."""
        rec = registry.get(self.name, self.version)
        return rec, (self.status() if self.status is not None else rec.status)


def watch(deployment: Source | Record | str | Watched, registry: Registry, status: StatusFn | None = None) -> Watched:
    """What to watch for a handle, a registry ``Record`` or a deployment name (its current version).

    ``status`` overrides the handle's own ``status()``; a Record or a name has none of its own.
    """
    if isinstance(deployment, Watched):
        return deployment if status is None else Watched(deployment.name, deployment.version, status)
    if isinstance(deployment, str):
        rec = registry.get(deployment)
        return Watched(rec.name, rec.version, status)
    own: Any = getattr(deployment, "status", None)
    return Watched(deployment.name, deployment.version, status or (own if callable(own) else None))
