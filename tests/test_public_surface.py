"""The public surface is what ``__all__`` says, and every error a user can meet is one of nbdeploy's own."""

from __future__ import annotations

import inspect
import types

import numpy as np
import pandas as pd
import pytest

import nbdeploy
from nbdeploy import errors


def test_all_is_exactly_the_public_surface():
    for name in nbdeploy.__all__:  # lazy names (PEP 562) resolve on first use: resolve them before looking
        getattr(nbdeploy, name)
    public = {
        name
        for name, value in vars(nbdeploy).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert public - {"DriftThresholds"} <= set(nbdeploy.__all__) - {"__version__"}, public - set(nbdeploy.__all__)
    for name in nbdeploy.__all__:  # lazy names (DriftThresholds) included: each resolves
        assert getattr(nbdeploy, name) is not None, name
    assert set(nbdeploy.__all__) - public - {"__version__", "DriftThresholds"} == set()


def test_every_error_class_is_an_nbdeploy_error_and_exported():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert classes
    for cls in classes:
        assert issubclass(cls, nbdeploy.NbdeployError), cls
        assert cls.__name__ in nbdeploy.__all__, f"{cls.__name__} reaches users but is not exported"


@pytest.mark.parametrize(
    "call",
    [
        lambda: nbdeploy.deploy(lambda df: df["a"], name="Bad Name", sample=pd.DataFrame({"a": [1.0]})),
        lambda: nbdeploy.deploy(lambda df: df["a"], name="ok", sample=pd.DataFrame({"a": [1.0]}), limits={"rows": 1}),
        lambda: nbdeploy.deploy(
            lambda df: df["a"], name="ok", sample=pd.DataFrame({"a": [1.0]}), limits={"max_rows": -1}
        ),
        lambda: nbdeploy.manifests(lambda df: df["a"], "out.yaml"),
        lambda: nbdeploy.deploy(lambda df: df["a"], name="ok", sample=pd.DataFrame({"a": [1.0]}), redact=["b"]),
    ],
)
def test_user_mistakes_raise_usage_errors(call):
    with pytest.raises(nbdeploy.UsageError):
        call()


def test_sending_what_cannot_be_sent_is_a_usage_error():
    from nbdeploy.wire import payload

    with pytest.raises(nbdeploy.UsageError, match="cannot send a set"):
        payload({1, 2})
    with pytest.raises(nbdeploy.UsageError, match="holds infinity"):
        payload(pd.DataFrame({"a": [np.inf]}))
