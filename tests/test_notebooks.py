"""A failing magic must fail a papermill run with one clear line (the example notebooks: tests/test_docs.py)."""

from __future__ import annotations

import contextlib
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


FULL_KEY = r"nbd_[A-Za-z0-9_-]{20,}"


def test_a_saved_notebook_holds_no_api_key_and_errors_are_one_line(tmp_path):
    """Execute and save a notebook that deploys, shows cards, asks for the key, rotates it and curls; then read
    the saved .ipynb: no key in it, old or new. Its last cell's 400 shows one line and the hint, no frames."""
    import re

    import nbdeploy

    keys_file = tmp_path / "keys.txt"
    cells = [
        "%load_ext nbdeploy\nimport pandas as pd, nbdeploy\nfrom sklearn.linear_model import LogisticRegression\n"
        "X = pd.DataFrame({'a': [0.0, 1.0, 2.0, 3.0], 'b': [1.0, 0.0, 1.0, 0.0]})\n"
        "model = LogisticRegression().fit(X, [0, 0, 1, 1])",
        "dep = %deploy model --name saved-notebook --sample X\ndep",
        "nbdeploy.get('saved-notebook')",
        "first = dep.key()\nfirst",
        "second = dep.rotate_key()\nsecond",
        f"open({str(keys_file)!r}, 'w').write(str(first) + '\\n' + str(second))\nprint(dep.curl())\ndep.predict(X)",
        "dep.predict(pd.DataFrame({'a': ['x']}))",
    ]
    try:
        with pytest.raises(papermill.PapermillExecutionError):
            _run_cells(tmp_path, *cells)
    finally:
        with contextlib.suppress(nbdeploy.NbdeployError):
            nbdeploy.get("saved-notebook").stop()
    saved = (tmp_path / "bad.out.ipynb").read_text()
    made = keys_file.read_text().split()
    assert len(made) == 2 and all(re.fullmatch(FULL_KEY, k) for k in made)
    for key in made:
        assert key not in saved
    assert not re.search(FULL_KEY, saved)
    last = nbformat.read(tmp_path / "bad.out.ipynb", as_version=4).cells[-1].outputs
    shown = "\n".join("".join(o.get("traceback", [])) + o.get("text", "") for o in last)
    assert "PredictionError: 'saved-notebook' answered 400" in shown and "column" in shown
    assert "Traceback" not in shown and "File " not in shown and len(shown.strip().splitlines()) <= 3, shown
