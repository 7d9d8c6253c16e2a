"""The capture corpus: each case reproduces the session's predictions in a fresh environment built
from the captured requirements alone (``nbdeploy.verify``), or fails with the documented message.

Fresh environments are real venvs built with uv from PyPI and cached by requirements hash under
the test NBDEPLOY_HOME, so cases sharing requirements share one environment.
"""

from __future__ import annotations

import random
import string
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import notebook

import nbdeploy
from nbdeploy.registry import Registry

pytestmark = pytest.mark.slow


def _token(prefix: str = "", n: int = 32, alphabet: str = string.ascii_letters + string.digits) -> str:
    """A credential-shaped random value made at run time (no secret is stored in the tests)."""
    rng = random.SystemRandom()
    return prefix + "".join(rng.choice(alphabet) for _ in range(n))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 300
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 10, n),
            "city": rng.choice(["oslo", "rome", "lima"], n),
        }
    )


@pytest.fixture(scope="module")
def label(frame) -> pd.Series:
    return ((frame.a > 0) ^ (frame.city == "rome")).astype(int)


def _verified(obj, sample, **kw) -> dict:
    report = nbdeploy.verify(obj, sample, **kw)
    assert report["ok"] and report["rows"] == min(len(sample), 200)
    return report


# -- cases that must reproduce in a fresh environment -----------------------------------------------------------


def test_lambda(frame):
    ns = notebook("model = lambda df: df['a'] * 2 + df['b']")
    report = _verified(ns["model"], frame)
    assert not any(r.startswith("scikit-learn") for r in report["requirements"])


def test_closure_over_a_dataframe(frame):
    ns = notebook(
        """
        def make(reference):
            means = reference.groupby("city")["a"].mean()
            def score(df):
                return df["a"] - df["city"].map(means)
            return score
        """
    )
    _verified(ns["make"](frame.copy()), frame)


def test_notebook_class_subclassing_a_sklearn_estimator(frame, label):
    ns = notebook(
        """
        from sklearn.linear_model import LogisticRegression
        class Cautious(LogisticRegression):
            def predict(self, X):
                return (self.predict_proba(X)[:, 1] > 0.3).astype(int)
        """
    )
    model = ns["Cautious"]().fit(frame[["a", "b"]], label)
    report = _verified(model, frame[["a", "b"]])
    assert any(r.startswith("scikit-learn==") for r in report["requirements"])


def test_function_transformer_wrapping_a_notebook_function(frame, label):
    ns = notebook(
        """
        import numpy as np
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer
        from sklearn.tree import DecisionTreeClassifier
        def features(df):
            return np.column_stack([df["a"], df["b"] ** 2, (df["city"] == "rome").astype(float)])
        def build(X, y):
            return make_pipeline(FunctionTransformer(features), DecisionTreeClassifier(random_state=0)).fit(X, y)
        """
    )
    _verified(ns["build"](frame, label), frame)


def test_helper_module_in_a_local_file(frame, tmp_path, monkeypatch):
    (tmp_path / "churn_features.py").write_text("def ratio(df):\n    return df['a'] / (1 + df['b'])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ns = notebook("import churn_features\ndef model(df):\n    return churn_features.ratio(df).round(6)\n")
    try:
        _verified(ns["model"], frame)
    finally:
        sys.modules.pop("churn_features", None)


def test_package_imported_only_inside_predict(frame):
    ns = notebook(
        """
        def model(df):
            import scipy.special
            return scipy.special.expit(df["a"].to_numpy())
        """
    )
    report = _verified(ns["model"], frame)
    assert any(r.startswith("scipy==") for r in report["requirements"]), report["requirements"]


def test_branch_not_taken_on_the_sample_still_counts(frame):
    ns = notebook(
        """
        def model(df):
            if len(df) > 10**9:
                import scipy.stats
                return scipy.stats.zscore(df["a"])
            return df["a"] * 1.0
        """
    )
    report = _verified(ns["model"], frame)
    assert any(r.startswith("scipy==") for r in report["requirements"])


def test_lightgbm(frame, label):
    lightgbm = pytest.importorskip("lightgbm")
    X = frame[["a", "b"]]
    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1, random_state=0).fit(X, label)
    report = _verified(model, X)
    assert f"lightgbm=={lightgbm.__version__}" in report["requirements"]


def test_column_transformer_with_one_hot(frame, label):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([("num", StandardScaler(), ["a", "b"]), ("cat", OneHotEncoder(), ["city"])])
    model = Pipeline([("pre", pre), ("rf", RandomForestClassifier(n_estimators=20, random_state=0))]).fit(frame, label)
    _verified(model, frame)


def test_estimator_on_a_numpy_sample(frame, label):
    from sklearn.ensemble import GradientBoostingRegressor

    X = frame[["a", "b"]].to_numpy()
    _verified(GradientBoostingRegressor(n_estimators=20, random_state=0).fit(X, frame["a"] * 3), X)


def test_verify_twice_uses_the_cached_environment(frame):
    ns = notebook("model = lambda df: df['b'] - 1")
    first = nbdeploy.verify(ns["model"], frame)
    second = nbdeploy.verify(ns["model"], frame)
    assert second["cached_environment"] and second["environment"] == first["environment"]


# -- cases that must fail with the documented message -----------------------------------------------------------


def test_secret_in_a_global_used_by_the_function(frame):
    ns = notebook("def model(df):\n    client = {'key': API_TOKEN}\n    return df['a']\n")
    ns["API_TOKEN"] = _token()
    with pytest.raises(nbdeploy.SecretFoundError) as info:
        nbdeploy.deploy(ns["model"], name="leaky-global", sample=frame)
    assert "'API_TOKEN' (global used by function 'model')" in str(info.value)
    assert ns["API_TOKEN"] not in str(info.value)  # the error never repeats the secret
    assert "leaky-global" not in set(nbdeploy.deployments(all_versions=True)["name"])  # nothing written


def test_secret_from_an_environment_variable_read_at_capture(frame, monkeypatch):
    monkeypatch.setenv("NBD_TEST_SERVICE_PASSWORD", _token(n=20))
    ns = notebook(
        "import os\nconf = {'pw': os.environ['NBD_TEST_SERVICE_PASSWORD']}\nmodel = lambda df: df['a'] + len(conf)"
    )
    with pytest.raises(nbdeploy.SecretFoundError, match="environment variable 'NBD_TEST_SERVICE_PASSWORD'"):
        nbdeploy.verify(ns["model"], frame)


def test_secret_in_a_default_argument(frame):
    key = _token("sk-", 40)
    ns = notebook(f"def model(df, api_key={key!r}):\n    return df['a']\n")
    with pytest.raises(nbdeploy.SecretFoundError, match="'api_key' \\(default argument of function 'model'\\)"):
        nbdeploy.verify(ns["model"], frame)


def test_cloud_key_pattern_anywhere_in_the_object(frame):
    ns = notebook("class Model:\n    def predict(self, df):\n        return df['a']\n")
    model = ns["Model"]()
    model.note = "uploaded with " + _token("AKIA", 16, string.ascii_uppercase + string.digits)
    with pytest.raises(nbdeploy.SecretFoundError, match="AWS access key"):
        nbdeploy.verify(model, frame)


def test_allow_secrets_overrides_a_named_false_positive(frame):
    ns = notebook("def model(df):\n    return df['a'] + len(token_pattern)\n")
    ns["token_pattern"] = _token(n=24)
    with pytest.raises(nbdeploy.SecretFoundError, match="token_pattern"):
        nbdeploy.verify(ns["model"], frame)
    assert nbdeploy.verify(ns["model"], frame, allow_secrets=["token_pattern"])["ok"]


def test_unpicklable_object_names_the_problem(frame):
    ns = notebook("import threading\nlock = threading.Lock()\ndef model(df):\n    with lock:\n        return df['a']\n")
    with pytest.raises(nbdeploy.CaptureError, match=r"cannot be serialised: TypeError: cannot pickle '_thread\.lock'"):
        nbdeploy.verify(ns["model"], frame)


def test_package_installed_from_a_local_path(frame, tmp_path, monkeypatch):
    src = tmp_path / "src" / "nbd_localpkg"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("def boost(s):\n    return s * 3\n")
    (tmp_path / "src" / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "nbd-localpkg"
            version = "0.3.0"
            """
        )
    )
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--target", str(site), str(tmp_path / "src")], check=True)
    monkeypatch.syspath_prepend(str(site))
    ns = notebook("import nbd_localpkg\ndef model(df):\n    return nbd_localpkg.boost(df['a'])\n")
    try:
        with pytest.raises(nbdeploy.CaptureError) as info:
            nbdeploy.verify(ns["model"], frame)
        assert (
            "package 'nbd-localpkg' 0.3.0 is needed by the model but was installed from file://" in info.value.message
        )
        assert "wheels=[" in info.value.hint and "requirements=[" in info.value.hint
        # the way out: ship it as a wheel
        wheels = tmp_path / "wheels"
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(tmp_path / "src")], check=True)
        (wheel,) = wheels.glob("*.whl")
        report = nbdeploy.verify(ns["model"], frame, wheels=[str(wheel)])
        assert not any(r.startswith("nbd-localpkg") for r in report["requirements"])
    finally:
        sys.modules.pop("nbd_localpkg", None)


def test_overridden_version_that_changes_predictions_is_named(frame, label):
    """A requirement override that installs another version is caught by comparing predictions."""
    import numpy

    ns = notebook(
        f"import numpy as np\ndef model(df):\n    return df['a'] * (np.__version__ == {numpy.__version__!r})\n"
    )
    other = "2.3.5" if numpy.__version__ != "2.3.5" else "2.2.6"
    with pytest.raises(nbdeploy.VerificationError, match=f"packages that differ from the session: numpy {other}"):
        nbdeploy.verify(ns["model"], frame[["a"]], requirements=[f"numpy=={other}"])


# -- cases that need a running service ------------------------------------------------------------------------


def test_tampered_artifact_makes_the_service_refuse_to_start(frame):
    ns = notebook("def model(df):\n    return df['a']\n")
    dep = nbdeploy.deploy(ns["model"], name="tampered", sample=frame)
    dep.stop()
    artifact = Path(dep._record.bento_path) / "src" / "artifact" / "model.pkl"
    data = bytearray(artifact.read_bytes())
    data[-3] ^= 0x01
    artifact.write_bytes(bytes(data))
    with pytest.raises(nbdeploy.TargetError, match=r"REFUSING TO START: artifact .* was modified after capture"):
        nbdeploy.rollback("tampered", 1)
    assert nbdeploy.get("tampered", 1).status() == "stopped"
    assert "sha256" in nbdeploy.get("tampered", 1).logs()


def test_python_of_another_minor_version_is_refused(frame):
    ns = notebook("def model(df):\n    return df['a']\n")
    dep = nbdeploy.deploy(ns["model"], name="old-python", sample=frame)
    dep.stop()
    reg = Registry()
    rec = reg.get("old-python", 1)
    reg.update("old-python", 1, info=replace(rec.info, lineage={**rec.info.lineage, "python": "3.9.18"}))
    with pytest.raises(
        nbdeploy.TargetError, match=r"captured with Python 3\.9\.18, but the local target runs Python 3\.11"
    ):
        nbdeploy.rollback("old-python", 1)


def test_lineage_and_audit_trail(frame):
    ns = notebook("def model(df):\n    return df['a']\n")
    dep = nbdeploy.deploy(ns["model"], name="audited", sample=frame)
    nbdeploy.deploy(
        ns["model"], name="audited", sample=frame, force=True
    )  # the same model: a new version only when forced
    nbdeploy.rollback("audited", 1)
    nbdeploy.get("audited").stop()
    info = dep.info()
    lineage = info["lineage"]
    for key in ("user", "host", "created_at", "python", "requirements_sha256", "artifact_sha256"):
        assert lineage[key], key
    assert lineage["artifact_sha256"] == info["sha256"]
    assert lineage["git_commit"] and isinstance(lineage["git_dirty"], bool)  # the tests run inside the repo
    events = nbdeploy.audit("audited")
    versions = events[~events.action.str.startswith("endpoint-")]  # the name's router: started and stopped too
    assert list(versions["action"]) == ["key-created", "deploy", "deploy", "rollback", "stop"]
    assert list(versions["version"].fillna(0).astype(int)) == [0, 1, 2, 1, 1]
    assert list(events["action"]).count("endpoint-start") == 1 and list(events["action"]).count("endpoint-stop") == 1
    assert versions["detail"].iloc[1]["lineage"]["artifact_sha256"] == info["sha256"]
    import sqlite3

    con = sqlite3.connect(Registry().path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE events SET action='nothing'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM events")
    con.close()
