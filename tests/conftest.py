"""Shared fixtures: an isolated NBDEPLOY_HOME, notebook-like namespaces, and a leak check.

Every test that starts a server stops it by PID; the session fixture below also fails the run if
any process started under the test home is still alive at the end.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nbdeploy.targets._process import cmdline, members

ROOT = Path(__file__).resolve().parent.parent


def _stop_everything() -> None:
    import nbdeploy

    for rec in nbdeploy.deployments(all_versions=True).itertuples():
        if rec.status == "running":
            nbdeploy.get(rec.name, rec.version).stop()


@pytest.fixture(scope="session", autouse=True)
def nbdeploy_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("nbdeploy-home")
    os.environ["NBDEPLOY_HOME"] = str(home)
    yield home
    _stop_everything()
    left = [(pid, cmdline(pid)) for pid in members(0, str(home))]
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
