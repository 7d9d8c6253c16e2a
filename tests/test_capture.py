"""Capture on its own: what gets pickled by value, and which versions get pinned."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

import pandas as pd
import pytest
from conftest import notebook

from nbdeploy.capture import capture
from nbdeploy.capture.deps import requirements_for
from nbdeploy.errors import CaptureError


def _installed(name: str) -> str:
    return metadata.version(name)


def test_pins_are_the_installed_versions_of_the_whole_closure():
    pins = requirements_for({"sklearn.ensemble._forest", "numpy"})
    as_dict = dict(p.split("==") for p in pins)
    assert as_dict["scikit-learn"] == _installed("scikit-learn")
    for transitive in ("scipy", "joblib", "threadpoolctl", "numpy", "pandas", "cloudpickle"):
        assert as_dict[transitive] == _installed(transitive), transitive
    assert "bentoml" not in as_dict


def test_user_requirements_override_pins():
    pins = requirements_for({"numpy"}, ["numpy>=1.26"])
    assert "numpy>=1.26" in pins and not any(p.startswith("numpy==") for p in pins)


def test_local_helper_module_travels_by_value(tmp_path, monkeypatch):
    helper = tmp_path / "churn_helpers.py"
    helper.write_text("def double(df):\n    return df['a'] * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ns = notebook("import churn_helpers\ndef model(df):\n    return churn_helpers.double(df) + 1\n")
    try:
        art = capture(ns["model"], pd.DataFrame({"a": [1.0, 2.0]}))
    finally:
        sys.modules.pop("churn_helpers", None)
    assert art.local_modules == ["churn_helpers"]
    # a fresh interpreter without the helper on its path can still run it
    code = textwrap.dedent(
        """
        import sys, cloudpickle, pandas as pd
        fn = cloudpickle.loads(sys.stdin.buffer.read())
        print(fn(pd.DataFrame({"a": [1.0, 2.0]})).tolist())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], input=art.payload, capture_output=True, cwd="/", check=True)
    assert out.stdout.decode().strip() == "[3.0, 5.0]"


def test_a_model_that_fails_on_its_sample_is_refused():
    ns = notebook("def model(df):\n    return df['missing']\n")
    with pytest.raises(CaptureError, match="fails on its own sample: KeyError"):
        capture(ns["model"], pd.DataFrame({"a": [1.0]}))


def test_an_object_without_predict_is_refused():
    with pytest.raises(CaptureError, match="a int cannot be deployed"):
        capture(3, pd.DataFrame({"a": [1.0]}))


def test_missing_sample_is_refused():
    with pytest.raises(CaptureError, match="sample"):
        capture(lambda df: df, None)
