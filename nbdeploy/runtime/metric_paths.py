"""Bound the ``endpoint`` label of BentoML's HTTP metrics: every path anyone requests used to become a label.

5,000 distinct junk paths grew a worker by 300 MB and the scrape to 19.5 MB, and no key is needed to send them.
BentoML labels requests with ``scope["path"]`` in its outermost middleware, before the guard runs, so the class it
builds that middleware from is replaced by one that shows unknown paths as ``OTHER`` (routing still sees the real
path). Paths the service serves keep their own label.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

OTHER = "/other"
_REAL_PATH = "nbdeploy.real_path"


def _restoring(app: Any) -> Any:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if _REAL_PATH in scope:
            scope = {**scope, "path": scope[_REAL_PATH]}
        await app(scope, receive, send)

    return inner


def install(known: Iterable[str], prefixes: tuple[str, ...] = ()) -> bool:
    """Patch BentoML's traffic-metrics middleware (before the server builds its app); False if it has moved."""
    try:
        from bentoml._internal.server.http import instruments
    except ImportError:
        return False
    base = getattr(instruments, "RunnerTrafficMetricsMiddleware", None)
    if base is None or getattr(base, "_nbdeploy_bounded", False):
        return base is not None
    paths = frozenset(known)

    class BoundedPaths(base):  # type: ignore[misc, valid-type]
        _nbdeploy_bounded = True

        def __init__(self, app: Any, **options: Any) -> None:
            super().__init__(_restoring(app), **options)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            path = scope.get("path", "")
            if scope.get("type") == "http" and path not in paths and not path.startswith(prefixes):
                scope = {**scope, "path": OTHER, _REAL_PATH: path}
            await super().__call__(scope, receive, send)

    setattr(instruments, "RunnerTrafficMetricsMiddleware", BoundedPaths)  # noqa: B010 (a class BentoML reads)
    return True
