"""The docs are notebooks that really run and a site that builds strictly.

- every notebook in notebooks/ runs under papermill with small parameters and stops what it deploys;
- the committed outputs still match a fresh run (nbval, volatile parts sanitised by notebooks/nbval-sanitize.cfg);
- ``mkdocs build --strict`` passes, and fails on a dead link;
- the troubleshooting page quotes the messages nbdeploy really prints.

Refresh the committed outputs with ``python scripts/execute_notebooks.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import papermill
import pytest
from conftest import ROOT

import nbdeploy
from nbdeploy.targets._process import cmdline, members

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SANITIZE = ROOT / "notebooks" / "nbval-sanitize.cfg"

#: Parameters that make any notebook declaring them small enough for CI; the docs show the full defaults.
SMALL = {"rows": 300}
#: Per notebook: extra parameters (names of its own, so nothing collides with other tests) and text its run must show.
NOTEBOOK_CHECKS: dict[str, tuple[dict[str, object], list[str]]] = {
    "quickstart.ipynb": (
        {"name": "quickstart-test"},
        [
            "identical to the notebook's",
            "probabilities of classes [0, 1]: identical to the notebook's",
            "nbdeploy-card",
            "curl -s -X POST",
            "missing column 'tenure'",
            "nbdeploy-panel",
        ],
    ),
    "functions_and_pipelines.ipynb": (
        {"fn_name": "docs-rule", "pipe_name": "docs-pipeline"},
        [
            "docs-rule: 75 predictions over HTTP, identical to the notebook's",
            "missing column 'plan'",
            "unknown column 'region'",
            "column 'tenure': expected a number, got 'ten' (row 0)",
            "401 {'error': 'unauthorized: send a valid API key'}",
            "400 {'error': \"missing column 'plan'\"",
        ],
    ),
    "monitoring.ipynb": (
        {"name": "docs-monitor"},
        [
            "ground truth accepted for 40 of them",
            "answered 400: missing column 'plan'",
            "drifted features: monthly, support_calls",
            "accuracy over 1000 labelled rows",
            "nbdeploy-panel",
            "stopped | requests still in the log: 41",
        ],
    ),
    "security.ipynb": (
        {"name": "docs-secure", "open_name": "docs-open", "private_name": "docs-private"},
        [
            "never shown here, so it never lands in a saved notebook",
            "dep.key() on display: Key('nbd_",
            "no key:           401 unauthorized: send a valid API key",
            "Bearer key:       200",
            "X-API-Key header: 200",
            "authorization: Bearer $NBDEPLOY_KEY",
            "old key: 401 unauthorized",
            "new key: 200",
            "answered 413: 150 rows in one request; the limit is 100",
            "SecretFoundError: refusing to capture: 'CRM_API_KEY' (global used by function 'churn_with_crm')",
            "deployed with allow_secrets=['SECRET_SAUCE_COLUMNS']",
            "Infinity:    400 column 'monthly': expected a finite number, got inf (row 0)",
            "text/plain:  415 send JSON",
            "feedback:    400 item 0: no answered request has the id",
            "files: ['requests.db 0o600']",
            "an address on disk: False",
            "no key: 200",
            "deployed with auth=False: anyone who reaches the URL can call it",
        ],
    ),
    "champion_challenger.ipynb": (
        {"name": "docs-cc"},
        [
            "callers use: http://127.0.0.1:",
            "v2 is the shadow; callers still meet v1",
            "all served by version(s) ['1']",
            "labels sent for 150 requests",
            "the candidate (v2) disagrees on",
            "McNemar exact p",
        ],
    ),
    "container.ipynb": (
        {"name": "docs-container"},
        [
            "identical to the notebook's",
            "[container]",
            "answered 400: missing column 'tenure'",
            "image:      nbdeploy-docs-container:v1-",
            "nbdeploy-docs-container-v1.image.tar",
            "nbdeploy-docs-container-v1.bento",
            "stopped | container still there: False",
        ],
    ),
    "edge.ipynb": (
        {"name": "docs-edge", "local_name": "docs-edge-local"},
        [
            "classes identical on 100% of rows",
            "step 'features' (CallsPerYear) cannot be exported to ONNX",
            "docs-edge v1 [edge] running: 100 predictions over HTTP, identical to the notebook's: True",
            "answered 400: missing column 'plan'",
        ],
    ),
    "batch_scoring.ipynb": (
        {"name": "docs-batch"},
        [
            "nbdeploy-batch",
            "quarantined: 3",
            "column 'tenure': expected a number, got 'ten'",
            "column 'tenure': expected an integer, got 2.5",
            "0 rows scored again",
            "identical to the notebook's predict: True",
            "proba_1",
            "requests marked as batch",
        ],
    ),
    "maintenance.ipynb": (
        {"name": "docs-maintain"},
        [
            "drift fired on stream window 11 (the shift began at 10)",
            "offline gate passed",
            "promoted v2 (the champion was v1)",
            "maintenance of docs-maintain: watching 5 rules; last retraining promoted",
            "nbdeploy_alert_firing for drift = 1, nbdeploy_retrain_in_flight = 1",
            "stopped | maintenance running: False | versions still running: []",
        ],
    ),
    # Deploys nothing (no cluster here), so no names to pass: manifests() only gives its default name a key.
    "kubernetes.ipynb": (
        {},
        [
            "HorizontalPodAutoscaler/churn-k8s",
            "image: registry.invalid/nbdeploy-churn-k8s:unbuilt",
            "readOnlyRootFilesystem: true",
            "path: /livez",
            "minReplicas: 3",
            "the Secret holds the sha256 of the API key; the key is nowhere in the manifests",
            "5 objects valid for Kubernetes 1.29 ... 1.34 (strict)",
            "a misspelled field is refused: Additional properties are not allowed ('readOnlyRootFS' was unexpected)",
            "not run: cluster_available is False",
            "removed: True",
        ],
    ),
}


def _text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(
        str(o.get("text", ""))
        + str(o.get("data", {}).get("text/plain", ""))
        + str(o.get("data", {}).get("text/html", ""))
        for c in nb.cells
        for o in c.get("outputs", [])
    )


def _running() -> set[tuple[str, int]]:
    frame = nbdeploy.deployments()
    return {(r.name, r.version) for r in frame.itertuples() if r.status == "running"}


def _kill_all_under(home: Path) -> list[tuple[int, str]]:
    left = [(pid, cmdline(pid)) for pid in members(0, str(home))]
    for pid, _ in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_under_papermill_with_small_parameters(tmp_path, path):
    declared = papermill.inspect_notebook(str(path))
    assert declared, f"{path.name} has no cell tagged 'parameters': CI cannot run it small"
    extra, expected = NOTEBOOK_CHECKS.get(path.name, ({}, []))
    params = {k: v for k, v in SMALL.items() if k in declared} | extra
    before = _running()
    out = tmp_path / path.name
    papermill.execute_notebook(
        str(path), str(out), parameters=params, cwd=str(path.parent), kernel_name="python3", progress_bar=False
    )
    text = _text(nbformat.read(out, as_version=4))
    for snippet in expected:
        assert snippet in text, f"{path.name}: {snippet!r} not in its outputs"
    assert _running() == before, f"{path.name} left deployments running: undeploy at its end"
    for name in extra.values():  # the names passed in are the ones the notebook deployed, and stopped
        assert nbdeploy.get(str(name)).status() == "stopped", name


def test_committed_notebooks_are_executed():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), f"{path.name}: run scripts/execute_notebooks.py"
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{path.name}: run top to bottom"
        assert "papermill" not in nb.metadata, f"{path.name}: commit the output of scripts/execute_notebooks.py"
        # API keys are shown once on cards: the script redacts them, and none may ever be committed
        keys = re.findall(r"nbd_[A-Za-z0-9_-]{20,}", path.read_text())
        assert keys in ([], ["nbd_KEY"] * len(keys)), f"{path.name}: an API key in its outputs"


def test_every_notebook_is_in_the_site_nav():
    # mkdocs reports pages left out of the nav (validation.omitted_files), but not notebooks.
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in NOTEBOOKS if f"notebooks/{p.name}" not in nav]
    assert not missing, f"add to the nav of mkdocs.yml: {missing}"


def test_execute_script_refreshes_in_place_and_stores_widget_state(tmp_path):
    spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import ipywidgets as w\nw.VBox([w.HTML('<b>panel</b>'), w.IntSlider(5)])")]
    path = tmp_path / "panel.ipynb"
    nbformat.write(nb, path)
    home = os.environ["NBDEPLOY_HOME"]
    script.main([str(path)])
    assert os.environ["NBDEPLOY_HOME"] == home  # each notebook had a temporary home of its own, now gone
    done = nbformat.read(path, as_version=4)
    assert "application/vnd.jupyter.widget-state+json" in done.metadata["widgets"]
    assert "application/vnd.jupyter.widget-view+json" in done.cells[0].outputs[0]["data"]
    assert done.cells[0].execution_count == 1 and "papermill" not in done.metadata


def _nbval(tmp_path: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    """``pytest --nbval`` in a subprocess with its own NBDEPLOY_HOME; kills (and reports) what it leaves running."""
    home = tmp_path / "nbval-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "NBDEPLOY_HOME": str(home)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:kmock",
        "-q",
        "--nbval",
        "--nbval-current-env",
    ]
    cmd += ["--nbval-sanitize-with", str(SANITIZE), "--rootdir", str(ROOT), *map(str, paths)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        left = _kill_all_under(home)
    assert not left, f"nbval left processes running: {left}"
    return proc


def test_committed_outputs_match_a_fresh_run_under_nbval(tmp_path):
    proc = _nbval(tmp_path, *NOTEBOOKS)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_nbval_fails_a_notebook_whose_outputs_are_stale(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("print(2 + 2)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="5\n")]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "stale.ipynb")
    proc = _nbval(tmp_path, tmp_path / "stale.ipynb")
    assert proc.returncode != 0 and "1 failed" in proc.stdout, proc.stdout[-3000:]


def test_nbval_fails_a_notebook_that_leaves_a_service_running(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import pandas as pd\nimport nbdeploy\n"
            "dep = nbdeploy.deploy(lambda df: df['a'], name='forgotten', sample=pd.DataFrame({'a': [1.0]}))",
            execution_count=1,
            # the deploy's stages line, cleared when it ends: an executed notebook stores it (empty) like this
            outputs=[
                nbformat.v4.new_output(
                    "display_data", data={"text/plain": "<IPython.core.display.HTML object>", "text/html": ""}
                )
            ],
        )
    ]
    nbformat.write(nb, tmp_path / "forgets.ipynb")
    shutil.copy(ROOT / "notebooks" / "conftest.py", tmp_path)  # the hook that gives notebooks/ its checks
    proc = _nbval(tmp_path, tmp_path / "forgets.ipynb")
    assert proc.returncode != 0 and "1 passed" in proc.stdout and "processes running under" in proc.stdout, proc.stdout


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(cmd, cwd=config.parent, env=env, capture_output=True, text=True, timeout=300)


def test_site_builds_strictly(tmp_path):
    proc = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]
    site = tmp_path / "site"
    for path in NOTEBOOKS:  # rendered with their committed outputs, not re-executed
        page = (site / "notebooks" / path.stem / "index.html").read_text()
        assert "nbdeploy-card" in page or "Deployment(" in page, path.name
    reference = (site / "reference" / "index.html").read_text()
    for name in nbdeploy.__all__:
        if not name.startswith("_") and name != "load_ipython_extension":
            assert f'id="nbdeploy.{name}"' in reference, f"{name} missing from the API reference"
    assert "The main job: train a model" in (site / "python-api" / "index.html").read_text()  # the script, embedded


def _docs_copy(tmp_path: Path) -> Path:
    """A copy of the docs sources to break on purpose; code and notebooks are linked, not copied."""
    copy = tmp_path / "docs-copy"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy)
    shutil.copytree(ROOT / "docs", copy / "docs", symlinks=True)
    for name in ("notebooks", "nbdeploy", "examples"):
        (copy / name).symlink_to(ROOT / name)
    return copy


def test_a_dead_link_fails_the_strict_build(tmp_path):
    copy = _docs_copy(tmp_path)
    page = copy / "docs" / "concepts.md"
    dead = "See [the old guide](old-guide.md) and [the port section](troubleshooting.md#no-such-heading)."
    page.write_text(page.read_text() + f"\n{dead}\n")
    proc = _mkdocs(copy / "mkdocs.yml", tmp_path / "site")
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0, said[-3000:]
    assert "old-guide.md" in said and "no-such-heading" in said, said[-3000:]  # a missing page, a missing anchor


# The failing calls the troubleshooting page documents, made for real in a fresh process and NBDEPLOY_HOME.
_MESSAGES = textwrap.dedent(
    """
    import json, socket
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell
    import nbdeploy
    from nbdeploy.capture.schema import infer_schema
    from nbdeploy.runtime.schema import InputError, to_model_input

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbdeploy")
    X = pd.DataFrame({"tenure": [3, 40], "monthly": [80.5, 20.0], "support_calls": [4, 0], "plan": ["basic", "pro"]})
    shell.user_ns.update(X_train=X, model=lambda df: df["tenure"] > 12, y=X["tenure"])
    out = {}
    for key, line in {
        "unknown model": "%deploy modle --name churn --sample X_train",
        "unknown sample": "%deploy model --name churn --sample X_tran",
        "missing option": "%deploy model --name churn",
        "no predict": "%deploy X_train --name churn --sample X_train",
        "a Series as sample": "%deploy model --name churn --sample y",
        "invalid name": "%deploy model --name Churn_Model --sample X_train",
        "unknown target": "%deploy model --name churn --sample X_train --target cloud",
        "not found": "%undeploy chrun",
    }.items():
        out[key] = "UsageError: " + str(shell.run_cell(line).error_in_exec)

    def api(key, call):
        try:
            call()
        except nbdeploy.NbdeployError as exc:
            out[key] = f"{type(exc).__name__}: {exc}"

    api("fails on its sample", lambda: nbdeploy.deploy(lambda df: df["churn_score"], name="churn", sample=X))
    api("a dict as sample", lambda: nbdeploy.deploy(lambda df: df["tenure"], name="churn", sample={"tenure": 3}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        api("port in use", lambda: nbdeploy.deploy(lambda df: df["tenure"], name="churn", sample=X, port=port))
    out["port in use"] = out["port in use"].replace(str(port), "8000")

    schema = infer_schema(X.assign(plan=X["plan"].astype("category")))
    row = {"tenure": 3, "monthly": 80.5, "support_calls": 4, "plan": "basic"}
    for key, inputs in {
        "400 missing": [{k: v for k, v in row.items() if k != "tenure"}],
        "400 unknown": [{**row, "region": "north"}],
        "400 type": [{**row, "tenure": "ten"}],
        "400 integer": [{**row, "tenure": 2.5}],
        "400 category": [{**row, "plan": "gold"}],
        "400 null": [{**row, "monthly": None}],
        "400 infinite": [{**row, "monthly": float("inf")}],
        "400 too wide": {"columns": [*row, "plan"], "data": [[*row.values(), "basic"]]},
    }.items():
        try:
            to_model_input(inputs, schema)
        except InputError as exc:
            out[key] = str(exc)
    print(json.dumps(out))
    """
)


def test_troubleshooting_quotes_the_real_messages(tmp_path):
    env = {**os.environ, "NBDEPLOY_HOME": str(tmp_path / "home")}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _MESSAGES], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        left = _kill_all_under(tmp_path / "home")
    assert proc.returncode == 0 and not left, proc.stderr[-3000:]
    messages = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(messages) == 19, sorted(messages)
    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    # Messages that need a running service are quoted from the committed notebooks (nbval keeps those real).
    notebooks = "\n".join(_text(nbformat.read(p, as_version=4)) for p in NOTEBOOKS)
    for key, msg in {"401": "unauthorized: send a valid API key", "400": "answered 400: missing column"}.items():
        assert msg in notebooks, f"no notebook shows the {key} message any more: {msg}"
        messages[key] = msg
    stale = {key: msg for key, msg in messages.items() if msg not in page}
    assert not stale, "docs/troubleshooting.md no longer quotes these real messages:\n" + "\n".join(
        f"- {key}: {msg}" for key, msg in stale.items()
    )
