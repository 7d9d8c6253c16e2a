"""The live monitoring panel in a real JupyterLab, in headless Chromium driven by Playwright.

A notebook deploys a model, opens ``dep.monitor()`` and sends traffic from a background thread (a third of
it ``predict_proba`` with feedback); the test waits until the panel's request-count tile shows a number that rose
and the calibration chart draws its bins (hover shows one), then saves screenshots into ``test-artifacts/``.
JupyterLab (with its kernels), the browser and the deployment are stopped by PID even when the test fails.
Chromium comes from Debian (``scripts/browser-setup.sh``): Playwright's own browser download does not work here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS

import nbdeploy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
NAME = "browser-panel"
KERNEL = "nbdeploy-test-venv"

CELLS = [
    """\
import threading
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
import nbdeploy

rng = np.random.default_rng(3)
X = pd.DataFrame({"tenure": rng.integers(0, 72, 800), "monthly": rng.normal(70, 20, 800).round(2),
                  "support_calls": rng.poisson(2, 800)})
y = ((X.support_calls > 2) & (X.tenure < 24) | (X.monthly > 95)).astype(int)
model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X[:600], y[:600])""",
    f'dep = nbdeploy.deploy(model, name="{NAME}", sample=X[:600])\ndep',
    "panel = dep.monitor(interval=1)\npanel",
    """\
traffic_stop = threading.Event()

def send_traffic():
    i = 0
    while not traffic_stop.wait(0.05):
        rows = X.iloc[600 + i % 200 : 600 + i % 200 + 4]
        if i % 3 == 0:  # probabilities and ground truth for a third of the requests: accuracy and calibration
            dep.predict_proba(rows)
            dep.feedback(dep.last_request_id, y.iloc[600 + i % 200 : 600 + i % 200 + 4].to_numpy())
        else:
            dep.predict(rows)
        i += 4

threading.Thread(target=send_traffic, name="traffic", daemon=True).start()
print("traffic started")""",
]

JS_KERNEL = """async () => {
  const app = window.jupyterapp;
  if (!app) return 'no-app';
  const w = app.shell.currentWidget;
  if (!w || !w.context) return 'no-notebook';
  await w.context.ready;
  await w.sessionContext.ready;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  try { app.shell.collapseLeft(); } catch (e) {}
  return k ? k.status : 'no-kernel';
}"""

JS_RUN_ALL = """() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }"""

JS_ERRORS = """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
  .filter(o => (o.getAttribute('data-mime-type') || '').includes('stderr') && /Error|Traceback/.test(o.innerText)
               || /Error displaying widget|Failed to load model class/.test(o.innerText))
  .map(o => o.innerText)"""

JS_TILE = """() => { const t = document.querySelector('.nbdeploy-tile-requests'); return t ? t.innerText : null; }"""
#: hover the calibration chart's middle bin and read the tooltip in one go (the panel redraws every second)
JS_HOVER_CALIBRATION = """() => {
  const bins = [...document.querySelectorAll('.nbdeploy-panel svg.nbd-calibration .nbd-cal-bin')];
  if (!bins.length) return null;
  const bin = bins[Math.floor(bins.length / 2)], b = bin.getBoundingClientRect();
  bin.dispatchEvent(new MouseEvent("mousemove", { clientX: b.x + 2, clientY: b.y + 20, bubbles: true }));
  return document.querySelector('.nbdeploy-panel .nbd-tip')?.innerText;
}"""


# ---------------------------------------------------------------------------------------------- processes


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill(pids: list[int], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after ``grace_s``."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _stop_lab(proc: subprocess.Popen[bytes], url: str, token: str) -> None:
    pids = [proc.pid, *_descendants(proc.pid)]  # kernels first: collected before anything exits
    if proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):  # polite: shuts its kernels down too
            httpx.post(f"{url}/api/shutdown", headers={"authorization": f"token {token}"}, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    _kill([p for p in pids if _alive(p)])
    proc.wait(timeout=10)


def _stop_deployments() -> None:
    for rec in nbdeploy.deployments(all_versions=True).itertuples():
        if rec.name == NAME and rec.recorded == "running":
            nbdeploy.get(rec.name, rec.version).stop()


# ---------------------------------------------------------------------------------------------- JupyterLab


def _lab_dirs(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A notebook in a temp root, and private Jupyter config, data (kernel spec), runtime and settings dirs."""
    root = tmp / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "nbdeploy test venv", "language": "python"}
    nbformat.write(nb, root / "panel.ipynb")
    dirs = {k: tmp / k for k in ("config", "data", "runtime", "settings", "workspaces")}
    kernel_dir = dirs["data"] / "kernels" / KERNEL
    kernel_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "nbdeploy test venv", "language": "python"}  # fmt: skip
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    settings = {  # no news or update pop-ups; every cell in the DOM (no virtual scrolling)
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"windowingMode": "none"},
        "extensionmanager-extension/plugin": {"enabled": False},
    }
    for rel, value in settings.items():
        path = dirs["settings"] / f"@jupyterlab/{rel}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    for d in dirs.values():
        d.mkdir(exist_ok=True)
    env = {
        **os.environ,  # NBDEPLOY_HOME is the test session's: the kernel inherits it
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("JUPYTER_PATH", None)
    return root, env


def _start_lab(root: Path, env: dict[str, str], log: Path, port: int, token: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
        "--port-retries=0", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


def open_and_run_all(page: Any, url: str, token: str, notebook: str = "panel.ipynb") -> None:
    """Open ``notebook`` in JupyterLab, wait for its kernel to be idle, then run every cell."""
    page.goto(f"{url}/lab/tree/{notebook}?token={token}", timeout=120_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    end = time.monotonic() + 120
    while (state := page.evaluate(JS_KERNEL)) != "idle":
        assert time.monotonic() < end, f"the kernel did not become idle: {state}"
        page.wait_for_timeout(200)
    page.evaluate(JS_RUN_ALL)


def _wait_lab(proc: subprocess.Popen[bytes], url: str, token: str, log: Path, deadline_s: float = 120) -> None:
    end = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/status", params={"token": token}, timeout=2).status_code == 200:
                return
        if time.monotonic() > end:
            raise AssertionError(f"JupyterLab did not answer within {deadline_s:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requests_shown(text: str | None) -> int | None:
    match = re.search(r"Requests\s+([\d,]+)", text or "")
    return int(match.group(1).replace(",", "")) if match else None


# ---------------------------------------------------------------------------------------------- the test


def test_live_panel_in_jupyterlab(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no {CHROMIUM}: run scripts/browser-setup.sh (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    root, env = _lab_dirs(tmp_path)
    port, token = _free_port(), secrets.token_hex(16)
    url, log = f"http://127.0.0.1:{port}", ARTIFACTS / "monitor-browser-jupyterlab.log"
    lab = _start_lab(root, env, log, port, token)
    console: list[str] = []
    try:
        _wait_lab(lab, url, token, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1500})
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
                open_and_run_all(page, url, token)

                first, shown, end = None, None, time.monotonic() + 240
                while True:
                    errors = page.evaluate(JS_ERRORS)
                    assert not errors, "a cell failed:\n" + "\n---\n".join(errors)
                    shown = _requests_shown(page.evaluate(JS_TILE))
                    if first is None:
                        first = shown
                    if first is not None and shown is not None and shown > first and shown >= 100:
                        break  # rose, and enough traffic for the screenshot to show something
                    assert time.monotonic() < end, f"the request tile did not rise: first {first}, now {shown}"
                    page.wait_for_timeout(250)
                tip, end = None, time.monotonic() + 60  # the calibration of the logged probabilities, as SVG
                while not (tip and "rows" in tip and "observed" in tip and "mean predicted" in tip):
                    assert time.monotonic() < end, f"no calibration chart with a tooltip: {tip!r}"
                    page.wait_for_timeout(250)
                    tip = page.evaluate(JS_HOVER_CALIBRATION)
                assert page.locator(".nbdeploy-panel svg.nbd-calibration circle").count() >= 2
                page.locator(".nbdeploy-panel").first.scroll_into_view_if_needed()
                page.locator(".nbdeploy-panel").first.screenshot(path=ARTIFACTS / "monitor-panel.png")
                page.screenshot(path=ARTIFACTS / "monitor-jupyterlab.png")
            finally:
                browser.close()
        assert shown > first
    finally:
        with contextlib.suppress(Exception):
            _stop_deployments()  # the kernel's deployment first: it leaves the kernel's process tree
        _stop_lab(lab, url, token)
        _stop_deployments()
        (ARTIFACTS / "monitor-browser-console.txt").write_text("\n".join(console) + "\n")
