"""The list views (``nbdeploy list``, ``nbdeploy.deployments()``, ``%deployments``) tell the truth, cheaply.

Fast tests use stand-in servers (a tiny HTTP server in a subprocess whose command line carries the marker the
local target checks) and records written straight into a registry; the slow test kills a real BentoML server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import notebook

import nbdeploy
from nbdeploy import config, views
from nbdeploy.registry import RUNNING, STOPPED, Record, Registry
from nbdeploy.runtime.recorder import SCHEMA
from nbdeploy.targets import _process

HEAVY = ("pandas", "numpy", "httpx", "bentoml")

#: Answers /readyz with 200 (or 503 with "sick" in its argv) until killed; prints its port first.
STAND_IN = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/readyz" and "sick" not in sys.argv
        self.send_response(200 if ok else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[object]:
    """Start stand-in servers; every one is killed at the end, also when the test fails."""
    procs: list[subprocess.Popen[str]] = []

    def start(marker: str, *extra: str) -> tuple[int, str]:
        proc = subprocess.Popen([sys.executable, "-c", STAND_IN, marker, *extra], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        return proc.pid, f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def _record(reg: Registry, name: str, target: str = "local", status: str = RUNNING, **fields: object) -> Record:
    rec = reg.allocate(name, target, {})
    return reg.update(name, rec.version, status=status, **fields)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_log(rec: Record, statuses: list[int], age_s: float = 10.0) -> None:
    path = config.deployment_dir(rec.name, rec.version) / "requests.db"
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    now = time.time()
    con.executemany(
        "INSERT INTO requests (request_id, ts, latency_ms, status, n_rows, error) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                f"{rec.name}-{i}",
                now - age_s + i * 0.01,
                3.0 + i,
                s,
                2,
                None if s == 200 else f"bad input {i} … column x",
            )
            for i, s in enumerate(statuses)
        ],
    )
    con.execute("INSERT INTO requests (request_id, ts, latency_ms, status, n_rows) VALUES ('old', ?, 1, 500, 1)",
                (now - 7200,))  # fmt: skip
    con.commit()
    con.close()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("nbdeploy") or os.path.join(os.path.dirname(sys.executable), "nbdeploy")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, env=env or dict(os.environ))


# -- live status ---------------------------------------------------------------------------------------------------


def test_a_registry_running_version_shows_what_its_process_does(tmp_path, stand_in):
    reg = Registry(tmp_path / "registry.db")
    marker = str(tmp_path / "bento-up")
    pid, url = stand_in(marker)
    sick_pid, sick_url = stand_in(str(tmp_path / "bento-sick"), "sick")
    up = _record(reg, "v-up", bento_path=marker, pid=pid, url=url)
    _record(reg, "v-sick", bento_path=str(tmp_path / "bento-sick"), pid=sick_pid, url=sick_url)
    _record(reg, "v-dead", bento_path=str(tmp_path / "bento-dead"), pid=_dead_pid(), url="http://127.0.0.1:9")
    _record(reg, "v-reused", bento_path=str(tmp_path / "bento-other"), pid=pid, url=url)  # PID of someone else
    _record(reg, "v-k8s", target="kubernetes", url="http://k8s.invalid")
    _record(reg, "v-stopped", status=STOPPED)
    _write_log(up, [200, 200, 400, 200])

    table = {r.name: r for r in views.rows(registry=reg)}
    assert {n: (r.status, r.checked) for n, r in table.items()} == {
        "v-up": ("running", True),
        "v-sick": ("degraded", True),
        "v-dead": ("failed", True),
        "v-reused": ("failed", True),
        "v-k8s": ("running", False),  # the cluster is not called from a list
        "v-stopped": ("stopped", True),
    }
    assert all(r.recorded == RUNNING for n, r in table.items() if n != "v-stopped")  # the registry is not rewritten
    assert table["v-dead"].hint == "nbdeploy restart v-dead" and table["v-reused"].hint == "nbdeploy restart v-reused"
    assert "nbdeploy restart v-sick" in table["v-sick"].hint and "nbdeploy logs v-sick" in table["v-sick"].hint
    assert table["v-up"].hint == table["v-k8s"].hint == table["v-stopped"].hint == ""
    assert (table["v-up"].requests, table["v-up"].errors, table["v-up"].error_rate) == (4, 1, 0.25)  # last hour only
    assert table["v-k8s"].requests is None and (table["v-dead"].requests, table["v-dead"].error_rate) == (0, None)


def test_pid_check_agrees_with_the_targets_own(tmp_path, stand_in):
    marker = str(tmp_path / "bento-agree")
    pid, _ = stand_in(marker)
    dead = _dead_pid()
    for args in ((pid, marker), (pid, "not-in-its-command-line"), (dead, ""), (None, ""), (os.getpid(), "pytest")):
        assert views.pid_alive(*args) == _process.is_alive(*args), args


def test_ten_deployments_list_in_well_under_a_second(tmp_path, stand_in):
    """Probes run concurrently: ten services that never answer cost one timeout, not ten."""
    import socket

    reg = Registry(tmp_path / "registry.db")
    silent = socket.socket()  # accepts connections (backlog) and never answers: every probe waits its timeout
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        marker = str(tmp_path / "bento-slow")
        pid, _ = stand_in(marker)
        for i in range(10):
            _record(reg, f"slow-{i}", bento_path=marker, pid=pid, url=f"http://127.0.0.1:{silent.getsockname()[1]}")
        t0 = time.perf_counter()
        table = views.rows(registry=reg)
        elapsed = time.perf_counter() - t0
    finally:
        silent.close()
    assert [r.status for r in table] == ["degraded"] * 10
    assert elapsed < 3 * views.PROBE_TIMEOUT_S, elapsed


# -- formatting ----------------------------------------------------------------------------------------------------


def test_times_are_relative():
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    cases = {
        timedelta(seconds=2): "just now",
        timedelta(seconds=45): "45 s ago",
        timedelta(minutes=3, seconds=10): "3 min ago",
        timedelta(hours=2, minutes=59): "2 h ago",
        timedelta(days=1, hours=1): "1 day ago",
        timedelta(days=5): "5 days ago",
        timedelta(days=40): "2026-10-20",
    }
    for delta, text in cases.items():
        assert views.ago((now - delta).isoformat(timespec="milliseconds"), now) == text
    assert views.ago(now.timestamp() - 180, now) == "3 min ago"


def test_text_table_does_not_wrap_or_escape():
    out = views.text_table(["A", "B"], [["a-very-long-deployment-name", "…"], ["x", None]])
    assert out.splitlines() == ["A                            B", "a-very-long-deployment-name  …", "x"]


# -- the three faces, without a server -----------------------------------------------------------------------------


def _isolated_home(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "home").mkdir(mode=0o700)
    return {**os.environ, "NBDEPLOY_HOME": str(tmp_path / "home")}


def test_cli_list_imports_no_heavy_module_and_shows_the_fix(tmp_path):
    env = _isolated_home(tmp_path)
    reg = Registry(Path(env["NBDEPLOY_HOME"]) / "registry.db")
    _record(reg, "crashed", bento_path=str(tmp_path / "bento"), pid=_dead_pid(), url="http://127.0.0.1:9")
    _record(reg, "on-k8s", target="kubernetes", url="http://k8s.invalid")
    code = (
        "import sys\n"
        "from nbdeploy.cli import main\n"
        f"heavy = {HEAVY!r}\n"
        "print('after import:', sorted(m for m in heavy if m in sys.modules))\n"
        "for argv in (['list'], ['list', '--all'], ['requests', 'crashed'], ['audit']):\n"
        "    assert main(argv) == 0, argv\n"
        "print('after list:', sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "after import: []" in out.stdout and "after list: []" in out.stdout, out.stdout
    lines = out.stdout.splitlines()
    crashed = next(ln for ln in lines if ln.startswith("crashed "))
    assert " failed " in crashed and "\n" not in crashed
    assert "crashed v1 is not running (its server died): nbdeploy restart crashed" in out.stdout
    assert "running (not checked)" in next(ln for ln in lines if ln.startswith("on-k8s "))
    assert "no requests recorded for crashed v1" in out.stdout


def test_cli_help_is_quick_to_import():
    """A regression guard on what loads, not a timing (bench/run.py times it): nothing heavy behind --help."""
    code = f"import sys, nbdeploy, nbdeploy.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_audit_and_json_print_unicode_as_itself(tmp_path):
    env = _isolated_home(tmp_path)
    reg = Registry(Path(env["NBDEPLOY_HOME"]) / "registry.db")
    _record(reg, "uni", url="http://127.0.0.1:9", pid=_dead_pid(), bento_path=str(tmp_path / "b"))
    reg.event("deploy-failed", "uni", 1, error="ValueError: column “tenure” is empty…", lineage={"x": 1})
    audit = _cli("audit", "uni", env=env)
    assert audit.returncode == 0, audit.stderr
    assert "column “tenure” is empty…" in audit.stdout and "\\u" not in audit.stdout and "lineage" not in audit.stdout
    listed = _cli("list", "--json", env=env)
    assert listed.returncode == 0 and '"status": "failed"' in listed.stdout and "\\u" not in listed.stdout


def test_requests_prints_the_log_without_pandas(tmp_path):
    env = _isolated_home(tmp_path)
    home = Path(env["NBDEPLOY_HOME"])
    reg = Registry(home / "registry.db")
    rec = _record(reg, "logged", url="http://127.0.0.1:9", pid=_dead_pid(), bento_path=str(tmp_path / "b"))
    old = os.environ["NBDEPLOY_HOME"]
    os.environ["NBDEPLOY_HOME"] = str(home)
    try:
        _write_log(rec, [200, 400, 200, 500], age_s=120)
    finally:
        os.environ["NBDEPLOY_HOME"] = old
    everything = _cli("requests", "logged", env=env)
    assert everything.returncode == 0, everything.stderr
    lines = everything.stdout.splitlines()
    assert lines[0] == "logged v1, last 5:" and lines[1].split() == [
        "TIME",
        "AGO",
        "STATUS",
        "LATENCY",
        "MS",
        "ROWS",
        "ERROR",
    ]
    assert "bad input 1 … column x" in everything.stdout and "2 min ago" in everything.stdout
    errors = _cli("requests", "logged", "--errors", "--limit", "2", env=env)
    rows = errors.stdout.splitlines()[2:]
    assert len(rows) == 2 and all(" 200 " not in r for r in rows) and "bad input 3" in rows[-1]  # newest last


def test_deployments_frame_is_indexed_by_name_and_keeps_its_columns(tmp_path, stand_in):
    marker = str(tmp_path / "bento-frame")
    pid, url = stand_in(marker)
    reg = Registry()
    _record(reg, "frame-up", bento_path=marker, pid=pid, url=url)
    _record(reg, "frame-dead", bento_path=marker, pid=_dead_pid(), url="http://127.0.0.1:9")
    try:
        frame = nbdeploy.deployments()
        assert {"name", "version", "target", "status", "url", "bento_tag", "created_at", "updated_at"} <= set(frame)
        assert {"recorded", "requests", "error_rate", "hint"} <= set(frame)
        assert frame.loc["frame-up", "status"] == "running" and frame.loc["frame-up", "hint"] == ""
        assert frame.loc["frame-dead", "status"] == "failed" and frame.loc["frame-dead", "recorded"] == "running"
        assert frame.loc["frame-dead", "hint"] == "nbdeploy restart frame-dead"
        assert frame.sort_values("name").name.is_monotonic_increasing  # the index does not shadow the column
        assert {r.name for r in frame.itertuples()} >= {"frame-up", "frame-dead"}
    finally:
        for name in ("frame-up", "frame-dead"):
            reg.update(name, 1, status=STOPPED, pid=None)


def test_the_magic_shows_a_compact_table(tmp_path, stand_in):
    from IPython.core.interactiveshell import InteractiveShell

    marker = str(tmp_path / "bento-magic")
    pid, url = stand_in(marker)
    reg = Registry()
    _record(reg, "magic-up-with-a-rather-long-name", bento_path=marker, pid=pid, url=url)
    _record(reg, "magic-dead", bento_path=marker, pid=_dead_pid(), url="http://127.0.0.1:9")
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbdeploy")
    try:
        listed = shell.run_line_magic("deployments", "")
        html = listed._repr_html_()
        assert listed.loc["magic-dead", "status"] == "failed"  # still a DataFrame for code
        assert "white-space:nowrap" in html and "<th" in html and "magic-up-with-a-rather-long-name" in html
        assert "nbdeploy restart magic-dead" in html and "just now" in html
        assert not re.search(r">\d{4}-\d\d-\d\dT", html)  # no raw ISO timestamp shown (only in a tooltip)
        body_rows = re.findall(r"<tr><td[^>]*>(.*?)</td>", html)
        assert body_rows and all(cell.startswith("<b>") for cell in body_rows)  # keyed by name, no 0..n column
        assert "magic-dead" in repr(listed) and "nbdeploy restart magic-dead" in repr(listed)
    finally:
        for name in ("magic-up-with-a-rather-long-name", "magic-dead"):
            reg.update(name, 1, status=STOPPED, pid=None)


# -- a real server killed ------------------------------------------------------------------------------------------


def _views(name: str, shell: object) -> dict[str, tuple[str, str]]:
    """(status, the text around the restart hint) in each of the three list views."""
    listed = _cli("list")
    line = next((ln for ln in listed.stdout.splitlines() if ln.startswith(f"{name} ")), "")
    frame = nbdeploy.deployments()
    magic = shell.run_line_magic("deployments", "")  # type: ignore[attr-defined]
    html = magic._repr_html_()
    return {
        "cli": (line.split()[3] if line else "missing", listed.stdout),
        "api": (frame.loc[name, "status"], frame.loc[name, "hint"]),
        "magic": (magic.loc[name, "status"], html),
    }


@pytest.mark.slow
def test_a_killed_server_shows_failed_everywhere_and_restart_brings_it_back(churn_data):
    from IPython.core.interactiveshell import InteractiveShell

    X, _ = churn_data
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbdeploy")
    dep = nbdeploy.deploy(notebook("def f(df):\n    return df['tenure'] * 2\n")["f"], name="views-crash", sample=X)
    try:
        url, pid = dep.url, dep.record.pid
        assert {k: v[0] for k, v in _views("views-crash", shell).items()} == dict.fromkeys(
            ["cli", "api", "magic"], "running"
        )
        os.kill(pid, signal.SIGKILL)  # the server dies; its worker is orphaned
        deadline = time.monotonic() + 10
        while _process.is_alive(pid, "bentoml"):
            assert time.monotonic() < deadline, "the killed server did not go"
            time.sleep(0.05)
        seen = _views("views-crash", shell)
        assert {k: v[0] for k, v in seen.items()} == dict.fromkeys(["cli", "api", "magic"], "failed"), seen
        for _, text in seen.values():
            assert "nbdeploy restart views-crash" in text
        status = _cli("status", "views-crash")
        assert status.returncode == 3 and "failed" in status.stdout
        assert "nbdeploy restart views-crash" in status.stderr
        restarted = _cli("restart", "views-crash")
        assert restarted.returncode == 0, restarted.stderr
        assert f"restarted views-crash v1: running at {url}" in restarted.stdout
        again = _views("views-crash", shell)
        assert {k: v[0] for k, v in again.items()} == dict.fromkeys(["cli", "api", "magic"], "running"), again
        assert nbdeploy.get("views-crash").url == url
        assert list(dep.predict(X[:3])) == list(X["tenure"][:3] * 2)
    finally:
        nbdeploy.get("views-crash", 1).stop()


def test_container_rows_ask_the_engine_only_when_the_service_does_not_answer(tmp_path, stand_in, monkeypatch):
    import nbdeploy.images

    asked: list[str] = []

    class Engine:
        def __init__(self, state: tuple[str, int] | None) -> None:
            self.state = state

        def container_state(self, name: str) -> tuple[str, int] | None:
            asked.append(name)
            return self.state

    reg = Registry(tmp_path / "registry.db")
    _, url = stand_in(str(tmp_path / "ctr"))
    state = {"container": {"engine": "podman", "container": "nbdeploy-ctr-v1"}}
    _record(reg, "ctr-up", target="container", url=url, state=state)
    _record(reg, "ctr-gone", target="container", url="http://127.0.0.1:9", state=state)
    monkeypatch.setattr(nbdeploy.images, "recorded_engine", lambda name: Engine(None))
    assert {r.name: r.status for r in views.rows(registry=reg)} == {"ctr-up": "running", "ctr-gone": "failed"}
    assert asked == ["nbdeploy-ctr-v1"]  # the answering one cost no engine call
    monkeypatch.setattr(nbdeploy.images, "recorded_engine", lambda name: Engine(("running", 0)))
    assert {r.name: r.status for r in views.rows(registry=reg)}["ctr-gone"] == "degraded"


def test_what_the_views_mirror_is_what_the_service_and_target_use():
    """views.py names these without importing their modules (numpy, httpx): they must not drift apart."""
    from nbdeploy.runtime.recorder import DB_NAME
    from nbdeploy.targets import container

    assert views.REQUEST_LOG == DB_NAME
    assert container._UP | {"restarting", "paused"} == views._CONTAINER_UP
