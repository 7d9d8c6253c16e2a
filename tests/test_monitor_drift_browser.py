"""The drift panel, the fleet and the standalone report in a real JupyterLab, in headless Chromium (Playwright).

One JupyterLab per module: a notebook deploys a 100-feature model twice, sends traffic with 3 features shifted,
opens ``dep.monitor()``, writes ``dep.report(...)`` and shows ``%monitor`` (the fleet). The tests check that the
drifted features come first, that selecting one shows its overlay, that hovering shows values, that the time
range changes the charts, that the fleet lists both deployments and that the report opens with the network
blocked. JupyterLab, its kernels and the deployments are stopped by PID even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS
from test_monitor_browser import (
    ARTIFACTS,
    JS_ERRORS,
    _free_port,
    _lab_dirs,
    _start_lab,
    _stop_lab,
    _wait_lab,
    open_and_run_all,
)

import nbdeploy

pytestmark = pytest.mark.slow

NAMES = ("drift-browser-a", "drift-browser-b")
SHIFTED = ("f000", "f001", "f002")
CELLS = [
    """\
import threading
import numpy as np
import pandas as pd
import nbdeploy

rng = np.random.default_rng(21)
X = pd.DataFrame({f"f{i:03d}": rng.normal(0, 1, 1500).round(3) for i in range(100)})

def score(df):
    return (df["f000"] + df["f050"] > 0).astype(int)""",
    f"""\
dep = nbdeploy.deploy(score, name="{NAMES[0]}", sample=X[:1000], compile=False)
other = nbdeploy.deploy(score, name="{NAMES[1]}", sample=X[:1000], compile=False)""",
    """\
def fresh(n):  # new rows every time, as real traffic: repeated rows would overstate the evidence
    live = pd.DataFrame(rng.normal(0, 1, (n, 100)).round(3), columns=X.columns)
    live[["f000", "f001", "f002"]] += 1.0  # three features shifted by one standard deviation
    return live

stop = threading.Event()

def send():
    while not stop.wait(0.02):
        dep.predict(fresh(5))

for _ in range(40):  # 200 rows first: enough for the drift rule's minimum window
    dep.predict(fresh(5))
threading.Thread(target=send, daemon=True).start()
panel = dep.monitor(interval=1)
panel""",
    """import time
end = time.monotonic() + 60
while len(dep.requests()) < 40 and time.monotonic() < end:  # the recorder writes a moment after the answer
    time.sleep(0.1)
path = dep.report('drift-report.html'); str(path)""",
    "%load_ext nbdeploy",
    "%monitor",
]


def _stop_deployments() -> None:
    for rec in nbdeploy.deployments(all_versions=True).itertuples():
        if rec.name in NAMES and rec.recorded == "running":
            nbdeploy.get(rec.name, rec.version).stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """One JupyterLab with the notebook run, and a Chromium page on it."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no {CHROMIUM}: run scripts/browser-setup.sh (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    root, env = _lab_dirs(tmp_path_factory.mktemp("drift-lab"))
    nb = nbformat.read(root / "panel.ipynb", as_version=4)
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nbformat.write(nb, root / "panel.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    url, log = f"http://127.0.0.1:{port}", ARTIFACTS / "monitor-drift-jupyterlab.log"
    proc = _start_lab(root, env, log, port, token)
    try:
        _wait_lab(proc, url, token, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                open_and_run_all(page, url, token)
                yield page, root
            finally:
                with contextlib.suppress(Exception):
                    page.screenshot(path=ARTIFACTS / "monitor-drift-jupyterlab.png", full_page=True)
                browser.close()
    finally:
        with contextlib.suppress(Exception):
            _stop_deployments()
        _stop_lab(proc, url, token)
        _stop_deployments()


def _poll(page: Any, js: str, ok: Any, what: str, deadline_s: float = 150) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        errors = page.evaluate(JS_ERRORS)
        assert not errors, "a cell failed:\n" + "\n---\n".join(errors)
        value = page.evaluate(js)
        if ok(value):
            return value
        assert time.monotonic() < end, f"{what}: last seen {value!r}"
        page.wait_for_timeout(250)


JS_ROWS = """() => [...document.querySelectorAll('.nbdeploy-panel .nbd-row')].map(
  r => [r.dataset.feature, r.classList.contains('nbd-drifted')])"""


def test_drifted_first_overlay_hover_and_time_range(lab):
    page, _ = lab
    rows = _poll(page, JS_ROWS, lambda r: len(r) >= 30 and sum(d for _, d in r) >= 3, "no drifted rows")
    flags = [d for _, d in rows]
    k = sum(flags)
    assert all(flags[:k]) and not any(flags[k:]), "the drifted features do not come first"
    assert set(SHIFTED) <= {f for f, _ in rows[:k]} and k <= 5, rows[:6]  # BH allows a rare false flag
    panel = page.locator(".nbdeploy-panel").first
    panel.locator(".nbd-row[data-feature='f001']").click()
    title = _poll(page, "() => document.querySelector('.nbdeploy-panel .nbd-overlay text')?.textContent",
                  lambda t: t and t.startswith("f001"), "no overlay for f001")  # fmt: skip
    assert "reference vs live" in title
    panel.locator(".nbd-overlay .nbd-bin").nth(12).hover()
    tip = _poll(page, "() => document.querySelector('.nbdeploy-panel .nbd-tip')?.innerText",
                lambda t: t and "reference" in t and "live" in t, "no tooltip on the overlay")  # fmt: skip
    assert re.search(r"\d+\.\d %", tip)
    panel.locator("svg.nbd-traffic").hover(position={"x": 420, "y": 80})
    _poll(page, "() => document.querySelector('.nbdeploy-panel .nbd-tip')?.innerText",
          lambda t: t and "requests/s" in t, "no tooltip on the traffic chart")  # fmt: skip
    js_title = "() => document.querySelector('.nbdeploy-panel svg.nbd-traffic text')?.textContent"
    panel.locator(".nbd-range[data-range='5m']").click()
    five = _poll(page, js_title, lambda t: t and "bucket 5 s" in t, "5 min range not applied")
    panel.locator(".nbd-range[data-range='24h']").click()
    day = _poll(page, js_title, lambda t: t and "bucket 1800 s" in t, "24 h range not applied")
    assert five != day
    # drag on a time chart zooms it; a double-click resets
    box = panel.locator("svg.nbd-traffic").bounding_box()
    page.mouse.move(box["x"] + 150, box["y"] + 60)
    page.mouse.down()
    page.mouse.move(box["x"] + 400, box["y"] + 60, steps=5)
    page.mouse.up()
    _poll(page, "() => document.querySelector('.nbdeploy-panel .nbd-ranges')?.innerText", lambda t: "zoomed" in t,
          "dragging did not zoom")  # fmt: skip
    panel.screenshot(path=ARTIFACTS / "monitor-drift-panel.png")


def test_the_fleet_lists_both_deployments_and_opens_one(lab):
    page, _ = lab
    js = "() => [...document.querySelectorAll('.nbdeploy-fleet .nbdeploy-fleet-tile')].map(t => t.innerText)"
    tiles = _poll(page, js, lambda t: t and all(any(n in x for x in t) for n in NAMES), "fleet tiles missing")
    assert all("req/s" in t and "p95" in t for t in tiles)
    fleet = page.locator(".nbdeploy-fleet").first
    fleet.locator(".nbdeploy-fleet-open", has_text=NAMES[1]).click()
    _poll(page, "() => document.querySelectorAll('.nbdeploy-fleet .nbd-root').length", lambda n: n >= 1,
          "clicking a tile did not open its panel")  # fmt: skip
    fleet.screenshot(path=ARTIFACTS / "monitor-fleet.png")


def test_the_report_opens_with_the_network_blocked(lab):
    page, root = lab
    report = root / "drift-report.html"
    _poll(page, "() => document.body.innerText.includes('drift-report.html')", bool, "no report written")
    context = page.context.browser.new_context()
    blocked: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    try:
        offline = context.new_page()
        offline.goto(report.as_uri())
        offline.wait_for_selector(".nbd-row", timeout=30_000)
        rows = offline.evaluate(JS_ROWS.replace(".nbdeploy-panel ", ""))
        assert len(rows) == 30 and set(SHIFTED) <= {f for f, d in rows if d} and rows[0][1]
        offline.locator("input.nbd-search").fill("f09")
        offline.wait_for_function("document.querySelectorAll('.nbd-row').length === 10")
        offline.screenshot(path=ARTIFACTS / "monitor-drift-report.png", full_page=True)
    finally:
        context.close()
    assert not blocked, blocked
