"""A model call that never returns must not leave a healthy-looking service that answers only 504s.

The request times out, but Python cannot stop the thread running the model, and every later request queues behind
it. So: while a call runs past the request timeout the service reports not ready (``/readyz`` 503, status
``degraded``), and once it runs past ``recycle_after_s`` the worker exits so BentoML's arbiter starts a fresh one.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

#: How often the watchdog looks (a tick, not a synchronisation: it only reads a timestamp).
TICK_S = 0.25
#: Exit status of a recycled worker, so the server log can tell a recycle from a crash.
RECYCLED = 75


class Watchdog:
    def __init__(
        self,
        busy_since: Callable[[], float | None],
        timeout_s: float,
        recycle_after_s: float,
        before_exit: Callable[[], object] = lambda: None,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.busy_since = busy_since
        self.timeout_s = timeout_s
        self.recycle_after_s = recycle_after_s
        self.before_exit = before_exit
        self.exit = exit
        self._thread = threading.Thread(target=self._watch, name="nbdeploy-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stuck_for(self) -> float:
        """Seconds the current model call has run, 0 when idle."""
        since = self.busy_since()
        return 0.0 if since is None else time.monotonic() - since

    @property
    def degraded(self) -> bool:
        return self.stuck_for() > self.timeout_s

    def _watch(self) -> None:
        while True:
            time.sleep(TICK_S)
            stuck = self.stuck_for()
            if stuck > self.recycle_after_s:
                sys.stderr.write(
                    f"nbdeploy: a model call has run {stuck:.1f} s, past the {self.timeout_s:g} s request timeout: "
                    "restarting this worker\n"
                )
                sys.stderr.flush()
                self.before_exit()
                self.exit(RECYCLED)
                return
