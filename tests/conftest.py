"""Shared fixtures: an isolated NBDEPLOY_HOME, notebook-like namespaces, and a leak check.

Every test that starts a server stops it by PID; the session fixture below also fails the run if
any process started under the test home is still alive at the end.
"""

from __future__ import annotations

import contextlib
import gc
import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nbdeploy.deployment import Deployment
from nbdeploy.registry import Record, Registry
from nbdeploy.targets import Running, Target, register_target, unregister_target
from nbdeploy.targets._process import cmdline, descendants, members

ROOT = Path(__file__).resolve().parent.parent


#: Debian's Chromium, for the real-browser tests (Playwright's own download does not work here: PLATFORM.md).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--no-proxy-server", "--disable-dev-shm-usage",
]  # fmt: skip


def _stop_everything() -> None:
    import nbdeploy

    for rec in nbdeploy.deployments(all_versions=True).itertuples():
        if rec.recorded == "running":  # as the registry has it: a crashed version's workers must go too
            nbdeploy.get(rec.name, rec.version).stop()


def _schedulers(home: str) -> list[int]:
    """Maintenance schedulers (``python -m nbdeploy.maintenance NAME``) started under ``home``."""
    found = []
    for pid in members(0, "nbdeploy.maintenance"):
        with contextlib.suppress(OSError):
            if f"NBDEPLOY_HOME={home}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
    return found


@pytest.fixture(scope="session", autouse=True)
def nbdeploy_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("nbdeploy-home")
    os.environ["NBDEPLOY_HOME"] = str(home)
    # one worker per service (the default is one per core): the suite runs dozens of services on 2 cores, and
    # starting each twice over would only cost time; tests/test_workers.py serves with two
    os.environ.setdefault("NBDEPLOY_WORKERS", "1")
    yield home
    _stop_everything()
    schedulers = _schedulers(str(home))  # a maintenance scheduler names no path: found by its environment
    for pid in schedulers:
        with contextlib.suppress(OSError):
            os.kill(pid, 15)
    gc.collect()  # a panel dropped without close() ends its drift judge when collected
    ours = set(descendants(os.getpid()))
    judges = [pid for pid in members(0, "nbdeploy.monitor.judge") if pid in ours]
    left = [(pid, cmdline(pid)) for pid in members(0, str(home))] + [(pid, "scheduler") for pid in schedulers]
    left += [(pid, "a live panel's drift judge") for pid in judges]
    for pid, _ in left:
        with contextlib.suppress(OSError):
            os.killpg(pid, 9)
    assert not left, f"processes left behind by the tests: {left}"


@pytest.fixture
def stop_after():
    """Collects deployments a test makes and stops them even when the test fails."""
    made: list[Any] = []
    yield made.append
    for dep in made:
        if dep.status() == "running":
            dep.stop()


def notebook(code: str) -> dict[str, Any]:
    """Run ``code`` the way a notebook cell runs it: in a namespace whose module is ``__main__``."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(code), "<notebook-cell>", "exec"), ns)
    return ns


#: A churn pipeline whose first step is a class defined in the notebook (so it travels by value).
CHURN_PIPELINE = """
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    class ChurnFeatures(BaseEstimator, TransformerMixin):
        def fit(self, X, y=None):
            self.plans_ = sorted(X["plan"].unique())
            return self
        def transform(self, X):
            out = X[["tenure", "monthly", "support_calls"]].astype(float).copy()
            out["calls_per_year"] = X["support_calls"] / (1 + X["tenure"] / 12)
            for p in self.plans_:
                out["plan_" + p] = (X["plan"] == p).astype(float)
            return out

    def build(X, y):
        return Pipeline([("feat", ChurnFeatures()), ("scale", StandardScaler()),
                         ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
    """


@pytest.fixture(scope="session")
def churn_data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(42)
    n = 600
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "monthly": rng.normal(70, 20, n).round(2),
            "support_calls": rng.poisson(2, n),
            "plan": rng.choice(["basic", "plus", "pro"], n),
        }
    )
    y = ((X.support_calls > 2) & (X.tenure < 24) | (X.monthly > 95)).astype(int)
    return X, y


def auth(dep: Any) -> dict[str, str]:
    """Headers carrying the deployment's API key, for tests that speak raw HTTP."""
    from nbdeploy.registry import Registry

    return {"authorization": f"Bearer {Registry().key(dep.name)}"}


# -- an in-process target: registered through the public function, it serves nothing and starts no process --

#: (name, version) -> state of the fake's "services"; no process, no port.
SERVICES: dict[tuple[str, int], str] = {}


class FakeTarget(Target):
    """Serves nothing: remembers what runs in ``SERVICES``, so the lifecycle around it can be checked."""

    name = "fake"

    def __init__(self, flavour: str = "plain") -> None:
        self.flavour = flavour

    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running:
        assert Path(bento_path).is_dir()  # the bento was built before the target was asked to run it
        SERVICES[record.name, record.version] = "running"
        return Running(url="http://fake.invalid", pid=None, info={"fake": {"flavour": self.flavour}})

    def status(self, record: Record) -> str:
        return SERVICES.get((record.name, record.version), "failed")

    def logs(self, record: Record, lines: int = 200) -> str:
        return f"fake log of {record.name} v{record.version}"

    def stop(self, record: Record) -> None:
        SERVICES[record.name, record.version] = "stopped"


class PortlessTarget(FakeTarget):
    name = "portless"
    no_port = "it listens where it likes"


@pytest.fixture
def fake() -> Any:
    register_target("fake", FakeTarget)
    register_target("portless", PortlessTarget)
    yield FakeTarget
    for rec in Registry().list(all_versions=True):  # nothing may stay running on a target about to be forgotten
        if rec.target in {"fake", "portless"} and rec.status == "running":
            Deployment(rec).stop()
    unregister_target("fake")
    unregister_target("portless")
