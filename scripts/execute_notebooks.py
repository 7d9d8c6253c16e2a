"""Execute the example notebooks in place with their full parameters, to refresh the committed outputs.

    .venv/bin/python scripts/execute_notebooks.py                      # every notebook in notebooks/
    .venv/bin/python scripts/execute_notebooks.py notebooks/quickstart.ipynb

Each notebook runs under papermill with the defaults of its ``parameters`` cell (the docs show the full run; the
test suite runs them small), with widget state stored so widget views render in the docs, and with
``NBDEPLOY_HOME`` pointing to a fresh temporary directory, so versions start at 1 and nothing touches your own
deployments. A notebook is rewritten only when its run succeeds and leaves no service running; papermill's
bookkeeping (timings, paths) is dropped so that a refresh changes only what the notebook shows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill

from nbdeploy.targets._process import members

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


#: A whole API key. nbdeploy never puts one in an output (cards and ``dep.key()`` show it masked), so the runner
#: does not redact: it refuses to write a notebook that holds one, which would be a bug to fix, not to hide.
FULL_KEY = re.compile(r"nbd_[A-Za-z0-9_-]{20,}")


def _clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop papermill's run metadata (timings, paths, versions); keep tags and widget state."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    leaked = FULL_KEY.search(nbformat.writes(nb))
    if leaked:
        raise SystemExit(f"an API key is in the executed notebook's outputs ({leaked.group()[:8]}…): not written")
    return nb


def execute(path: Path, home: Path) -> None:
    """Run ``path`` with papermill; replace it with the executed notebook if the run succeeds and cleans up."""
    out = home / f"{path.stem}.out.ipynb"
    try:
        papermill.execute_notebook(
            str(path),
            str(out),
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
            store_widget_state=True,
            record_timing=False,
        )
    except papermill.PapermillExecutionError as exc:
        kept = Path(tempfile.gettempdir()) / out.name
        if out.exists():
            shutil.copy(out, kept)
        raise SystemExit(f"{path.name} failed (the executed copy is in {kept}):\n{exc}") from None
    finally:
        left = members(0, str(home))
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    if left:
        raise SystemExit(f"{path.name} left {len(left)} processes running: undeploy what it deploys at its end")
    nbformat.write(_clean(nbformat.read(out, as_version=4)), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all in notebooks/)")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    # The kernel runs this interpreter's environment (its bin/ first on PATH, as scripts/test.sh does), with a
    # temporary NBDEPLOY_HOME of its own per notebook; both are put back afterwards.
    saved = {k: os.environ.get(k) for k in ("PATH", "NBDEPLOY_HOME")}
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        for path in paths:
            with tempfile.TemporaryDirectory(prefix="nbdeploy-docs-") as tmp:
                os.environ["NBDEPLOY_HOME"] = tmp
                execute(path, Path(tmp))
            print(f"executed {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    main()
