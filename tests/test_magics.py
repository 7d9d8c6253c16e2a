"""The magics on a real IPython shell, in milliseconds: deploys go to the in-process fake target (conftest)."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import SERVICES
from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.interactiveshell import InteractiveShell

import nbdeploy


@pytest.fixture
def shell(fake):
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "nbdeploy")
    sh.user_ns.update(
        X=pd.DataFrame({"tenure": [3, 40, 12], "email": ["a@x", "b@x", "c@x"]}),
        score=lambda df: df["tenure"] > 12,
    )
    yield sh
    sh.user_ns.pop("X", None)


def _error(shell, line: str) -> str:
    result = shell.run_cell(line)
    assert isinstance(result.error_in_exec, IPythonUsageError), result.error_in_exec
    return str(result.error_in_exec)


def test_deploy_list_and_undeploy_through_the_magics(shell):
    dep = shell.run_line_magic("deploy", "score --name magic-fast --sample X --target fake --redact email:hash")
    assert isinstance(dep, nbdeploy.Deployment) and dep.target == "fake" and dep.version == 1
    assert SERVICES["magic-fast", 1] == "running" and dep.info()["redact"] == {"email": "hash"}
    assert dep.info()["example"][0]["email"] == "redacted"
    again = shell.run_line_magic("deploy", "score -n magic-fast -s X -t fake -o flavour=spicy")
    assert again.version == 2 and again.info()["fake"] == {"flavour": "spicy"}
    listed = shell.run_line_magic("deployments", "--all")
    rows = listed[listed.name == "magic-fast"]
    assert list(rows.version) == [1, 2] and list(rows.status) == ["stopped", "running"]
    shell.run_line_magic("undeploy", "magic-fast")
    assert nbdeploy.get("magic-fast", 2).status() == "stopped"


def test_user_mistakes_are_one_line_usage_errors(shell):
    assert "model 'scroe' is not defined" in _error(shell, "%deploy scroe --name m --sample X --target fake")
    assert "sample 'Y' is not defined" in _error(shell, "%deploy score --name m --sample Y --target fake")
    assert _error(shell, "%deploy score --name Bad_Name --sample X --target fake").startswith(
        "invalid deployment name 'Bad_Name'"
    )
    assert "redact names column 'mail'" in _error(shell, "%deploy score -n m -s X -t fake --redact mail")
    assert "target 'fake' does not take registry" in _error(
        shell, "%deploy score -n m -s X -t fake --registry r.example/ml"
    )
    assert "DeploymentNotFound: no deployment 'nothing-here'" in _error(shell, "%undeploy nothing-here")
