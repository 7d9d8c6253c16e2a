"""A failing magic must fail a papermill run with one clear line (the example notebooks: tests/test_docs.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

pytestmark = pytest.mark.slow


def _run_cells(tmp_path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "bad.ipynb"
    nbformat.write(nb, src)
    out = tmp_path / "bad.out.ipynb"
    papermill.execute_notebook(str(src), str(out), kernel_name="python3")
    return out


@pytest.mark.parametrize(
    "cell, message",
    [
        ("%deploy modle --name churn --sample X", "model 'modle' is not defined in this notebook"),
        ("%deploy model --name churn --sample X_train", "sample 'X_train' is not defined in this notebook"),
        ("%deploy X --name churn --sample X", "CaptureError: a DataFrame cannot be deployed"),
        ("%deploy model --name Churn_Model --sample X", "invalid deployment name 'Churn_Model'"),
        ("%deploy model --name churn", "the following arguments are required: --sample"),
        ("%undeploy nothing-here", "DeploymentNotFound: no deployment 'nothing-here'"),
    ],
)
def test_a_bad_magic_fails_the_run_with_one_clear_line(tmp_path, cell, message):
    setup = "%load_ext nbdeploy\nimport pandas as pd\nX = pd.DataFrame({'a': [1.0, 2.0]})\nmodel = lambda df: df['a']"
    with pytest.raises(papermill.PapermillExecutionError):
        _run_cells(tmp_path, setup, cell)
    outputs = nbformat.read(tmp_path / "bad.out.ipynb", as_version=4).cells[-1].outputs
    shown = "".join(o.get("text", "") + "".join(o.get("traceback", [])) for o in outputs)
    assert shown.startswith("UsageError: ") and message in shown, shown
    assert "Traceback" not in shown and len(shown.strip().splitlines()) <= 2
