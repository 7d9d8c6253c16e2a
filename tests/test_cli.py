"""The ``nbdeploy`` command and the main-job example, run as real subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, notebook

import nbdeploy

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("nbdeploy") or os.path.join(os.path.dirname(sys.executable), "nbdeploy")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_list_status_logs_stop(churn_data):
    X, _ = churn_data
    dep = nbdeploy.deploy(notebook("def f(df):\n    return df['tenure']\n")["f"], name="cli-demo", sample=X)
    try:
        listed = _cli("list")
        assert listed.returncode == 0 and "cli-demo" in listed.stdout and "running" in listed.stdout
        status = _cli("status", "cli-demo")
        assert status.returncode == 0 and f"cli-demo v1 [local] running {dep.url}" in status.stdout
        logs = _cli("logs", "cli-demo")
        assert logs.returncode == 0 and "Starting production HTTP BentoServer" in logs.stdout
        stopped = _cli("stop", "cli-demo")
        assert stopped.returncode == 0 and "stopped cli-demo v1" in stopped.stdout
        after = _cli("status", "cli-demo")
        assert after.returncode == 3 and "stopped" in after.stdout
    finally:
        if dep.status() == "running":
            dep.stop()


@pytest.mark.parametrize("command", ["status", "restart", "requests", "logs"])
def test_unknown_name_is_one_clear_line(command):
    out = _cli(command, "no-such-model")
    assert out.returncode == 2
    assert out.stderr.startswith("error: no deployment 'no-such-model'") and "Traceback" not in out.stderr


def test_main_job_example_prints_a_prediction():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "deploy_churn.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "prediction from the endpoint: [" in out.stdout
    assert "endpoint == in-process on 500 rows: True" in out.stdout
    assert "stopped; status: stopped" in out.stdout
