"""``pytest --nbval notebooks/``: each notebook runs in a fresh ``NBDEPLOY_HOME``, and nothing may be left running.

This is how ``scripts/execute_notebooks.py`` made the committed outputs: versions start at 1 and ``%deployments``
lists only the notebook's own deployments. It also keeps a validation run away from your own ``~/.nbdeploy``.
The homes are subdirectories of ``$NBDEPLOY_HOME`` when it is set, else of a new temporary directory. A service
still running when the session ends (a notebook that failed, or forgot to undeploy) is killed and fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from nbdeploy.targets._process import members

_OWN_BASE = not os.environ.get("NBDEPLOY_HOME")
_BASE = Path(tempfile.mkdtemp(prefix="nbdeploy-nbval-") if _OWN_BASE else os.environ["NBDEPLOY_HOME"])
_current: list[object] = [None]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Runs before nbval starts the notebook's kernel (on its first cell), so the kernel inherits the new home.
    notebook = item.parent
    if notebook is not _current[0]:
        _current[0] = notebook
        home = _BASE / Path(str(item.path)).stem
        home.mkdir(parents=True, exist_ok=True)
        os.environ["NBDEPLOY_HOME"] = str(home)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = members(0, str(_BASE))
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if _OWN_BASE:
        shutil.rmtree(_BASE, ignore_errors=True)
    if left:
        print(f"\nnotebooks left {len(left)} processes running under {_BASE} (killed): undeploy at the end")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
