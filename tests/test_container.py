"""The container target with real podman, real images and real HTTP.

One image is built (module fixture) and shared: the tests below run in file order and the last one stops it.
Every container a test starts is removed by that test; the module fixture then fails the run if any container
made from this test home is left, and removes the images the tests built.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from callers import Caller
from conftest import CHURN_PIPELINE, ROOT, notebook

import nbdeploy
from nbdeploy import config
from nbdeploy.cli import main as cli
from nbdeploy.errors import EngineError, ImageBuildError, TargetError
from nbdeploy.runtime.guard import digest
from nbdeploy.targets import _baseimage, _process
from nbdeploy.targets._engine import Engine, find_engine
from nbdeploy.targets.base import is_ready
from nbdeploy.targets.container import BENTO_UID

pytestmark = pytest.mark.slow


def _home_label() -> str:
    return f"label=nbdeploy.home={config.home().resolve()}"


def _ours(engine: Engine, what: str) -> list[str]:
    """Containers (``ps``) or images made from this test home."""
    args = ["ps", "-a", "--format", "{{.Names}}"] if what == "ps" else ["images", "-q"]
    return engine.run([*args, "--filter", _home_label()]).stdout.split()


@pytest.fixture(scope="module")
def engine():
    engine = find_engine("podman")
    _baseimage.ensure(
        engine, cache=_baseimage.cache_file(ROOT / ".cache")
    )  # scripts/test.sh made it already; this covers a bare `pytest`
    yield engine
    left = _ours(engine, "ps")
    for name in left:
        engine.run(["rm", "-f", "-t", "0", name])
    for image in _ours(engine, "images"):
        engine.run(["rmi", "-f", image], check=False)
    assert not left, f"containers left behind by the tests: {left}"


@pytest.fixture(scope="module")
def model_and_data(churn_data):
    X, y = churn_data
    model = notebook(CHURN_PIPELINE)["build"](X[:500], y[:500])
    assert type(model.steps[0][1]).__module__ == "__main__"
    return model, X


@pytest.fixture(scope="module")
def deployed(engine, model_and_data):
    model, X = model_and_data
    t0 = time.perf_counter()
    dep = nbdeploy.deploy(model, name="ctr-churn", sample=X[:500], target="container")
    dep.deploy_s = time.perf_counter() - t0  # type: ignore[attr-defined]
    yield dep
    if dep.status() != "stopped":
        dep.stop()


def test_pipeline_with_notebook_step_predicts_like_the_session(deployed, model_and_data, engine):
    model, X = model_and_data
    got = deployed.predict(X[500:600])
    assert got.shape == (100,)
    np.testing.assert_array_equal(got, model.predict(X[500:600]))

    info = deployed.info()
    assert info["target"] == "container" and info["status"] == "running"
    rec = info["container"]
    assert rec["engine"] == "podman" and rec["container"] == "nbdeploy-ctr-churn-v1"
    assert engine.image_id(rec["image"]) == rec["image_id"]
    assert rec["size_bytes"] == engine.image_size(rec["image_id"]) and 100e6 < rec["size_bytes"] < 1.2e9
    fmt = "{{.Id}} {{.HostConfig.RestartPolicy.Name}} {{json .HostConfig.PortBindings}}"
    inspected = engine.run(["container", "inspect", "--format", fmt, rec["container"]]).stdout
    cid, policy, ports = inspected.split(" ", 2)
    assert cid == rec["container_id"] and policy == "unless-stopped"
    assert (
        '"HostIp":"127.0.0.1"' in ports.replace(" ", "") and f'"HostPort":"{deployed.url.rsplit(":", 1)[1]}"' in ports
    )
    print(f"\ncontainer deploy: build {rec['build_s']} s, ready {rec['ready_s']} s, total {deployed.deploy_s:.1f} s")


def test_image_is_built_on_the_local_base_without_compilers(deployed, engine):
    image = deployed.info()["container"]["image"]
    script = (
        "python -c 'import sys; print(sys.version_info[:2])'; python -c 'import uvloop, httptools; print(\"fast\")';"
        " for t in gcc cc make git; do command -v $t; done; :"
    )
    probe = engine.run(["run", "--rm", "--pull", "never", "--entrypoint", "sh", image, "-c", script]).stdout
    assert probe.splitlines()[0] == str(sys.version_info[:2])  # the session's Python major.minor
    assert probe.splitlines()[1] == "fast"  # uvicorn serves with uvloop and httptools
    assert probe.splitlines()[2:] == []  # no compiler, make or git: BentoML's default apt step was skipped
    size = int(engine.run(["image", "inspect", "--format", "{{.Size}}", image]).stdout)
    print(f"\nimage size {size / 1e6:.0f} MB")
    assert size < 1_000_000_000  # BentoML's default (python:slim + build-essential + git) is ~1.3 GB


def test_base_image_carries_the_host_ca_bundle_and_session_python(engine):
    base = _baseimage.default_tag()
    out = engine.run(["run", "--rm", "--pull", "never", base, "cat", "/etc/ssl/certs/ca-certificates.crt"]).stdout
    host = _baseimage.host_ca_bundle()
    assert host is not None
    last_cert = host.read_text().strip().rsplit("-----BEGIN CERTIFICATE-----", 1)[1]
    assert last_cert in out
    label = engine.run(["image", "inspect", "--format", '{{index .Labels "nbdeploy.python"}}', base]).stdout.strip()
    assert label == _baseimage.session_python()


def test_status_logs_and_deployments_show_both_targets(deployed, churn_data, stop_after):
    X, _ = churn_data
    assert deployed.status() == "running"
    deployed.predict(X[:3])
    assert "Starting production HTTP BentoServer" in deployed.logs(50)  # no line per request: access log off
    # The service writes its request log into the mounted deployment folder, as the image's own user.
    version_dir, deadline = config.deployment_dir("ctr-churn", 1), time.monotonic() + 30
    while not [p for p in version_dir.iterdir() if p.stat().st_uid == BENTO_UID] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in version_dir.iterdir() if p.stat().st_uid == BENTO_UID], list(version_dir.iterdir())
    assert cli(["status", "ctr-churn"]) == 0
    local = nbdeploy.deploy(notebook("def f(df):\n    return df['tenure']\n")["f"], name="ctr-local", sample=X)
    stop_after(local)
    frame = nbdeploy.deployments()
    rows = frame.set_index("name").loc[["ctr-churn", "ctr-local"]]
    assert list(rows["target"]) == ["container", "local"] and set(rows["status"]) == {"running"}


def test_a_forest_serves_compiled_in_its_container_with_workers_per_core(engine, churn_data, stop_after):
    """The image carries onnxruntime (pinned as at deploy); the container rechecks parity at load and serves the
    compiled forest; it runs one worker per core it may use (two here, unless the suite's NBDEPLOY_WORKERS says)."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = churn_data
    num = X[["tenure", "monthly", "support_calls"]]
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(num[:400], y[:400])
    dep = nbdeploy.deploy(model, name="ctr-compiled", sample=num[:400], target="container", limits={"workers": 2})
    stop_after(dep)
    assert dep.info()["compiled"]["path"] == "onnx"
    np.testing.assert_array_equal(dep.predict_proba(num[400:]), model.predict_proba(num[400:]))
    said = [line for line in dep.logs(400).splitlines() if line.startswith("nbdeploy: serving")]
    assert len(said) == 2 and all("serving the compiled model" in line for line in said), said  # one per worker
    dep.stop()


@pytest.fixture
def other_podman(engine):
    """Another machine's podman: empty storage of its own (short paths: podman caps the runroot at 50 chars)."""
    with tempfile.TemporaryDirectory(prefix="nbd-", dir="/tmp", ignore_cleanup_errors=True) as tmp:
        prefix = [engine.binary, "--root", f"{tmp}/root", "--runroot", f"{tmp}/run"]

        def podman(*args: str, check: bool = True) -> str:
            proc = subprocess.run([*prefix, *args], capture_output=True, text=True, env=engine.env(), timeout=300)
            assert proc.returncode == 0 or not check, proc.stderr
            return proc.stdout

        yield podman
        podman("rm", "-a", "-f", "-t", "0", check=False)
        podman("rmi", "-a", "-f", check=False)


def test_export_archive_loads_into_a_fresh_podman_and_runs(deployed, model_and_data, other_podman, tmp_path):
    model, X = model_and_data
    rec = deployed.info()["container"]
    assert cli(["export", "ctr-churn", str(tmp_path / "out")]) == 0
    image_tar, bento = (
        tmp_path / "out" / "nbdeploy-ctr-churn-v1.image.tar",
        tmp_path / "out" / "nbdeploy-ctr-churn-v1.bento",
    )
    assert sorted((tmp_path / "out").iterdir()) == [bento, image_tar]
    with tarfile.open(bento) as archive:
        assert any(n.endswith("bento.yaml") for n in archive.getnames())

    podman = other_podman  # nothing can come from the local images
    assert podman("images", "-q") == ""
    loaded = podman("load", "-i", str(image_tar))
    assert rec["image"] in loaded
    # Its own API key: the service reads key hashes from NBDEPLOY_KEYS_FILE (fails closed without one).
    key = "handoff-test-key"
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "keys.json").write_text(json.dumps({"sha256": [digest(key)]}))
    port = _process.free_port()
    try:
        podman(
            "run", "-d", "--name", "nbdeploy-test-exported", "--init", "-p", f"127.0.0.1:{port}:3000",
            "-v", f"{tmp_path / 'keys'}:/keys:ro", "-e", "NBDEPLOY_KEYS_FILE=/keys/keys.json",
            "-e", f"NBDEPLOY_ARTIFACT_SHA256={deployed.info()['sha256']}", rec["image"],
        )  # fmt: skip
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while not is_ready(url, timeout=1.0) and time.monotonic() < deadline:
            time.sleep(0.1)
        body = {"inputs": X[500:600].to_dict(orient="records")}
        assert httpx.post(f"{url}/predict", json=body, timeout=60).status_code == 401
        resp = httpx.post(f"{url}/predict", json=body, headers={"authorization": f"Bearer {key}"}, timeout=60)
        assert resp.status_code == 200, resp.text
        np.testing.assert_array_equal(resp.json()["predictions"], model.predict(X[500:600]))
    finally:
        podman("rm", "-f", "-t", "0", "nbdeploy-test-exported", check=False)
    assert podman("ps", "-a", "-q") == ""


def test_redeploy_rollback_and_restart_on_one_url_lose_no_request(deployed, model_and_data, engine, stop_after):
    """A client calls the stable URL all along: redeploy (magic), rollback, restart beside (a second container of
    the version, then the first drained and removed). Not one call fails, and each swap is seen by the client."""
    model, X = model_and_data
    from IPython.core.interactiveshell import InteractiveShell

    url = deployed.endpoint_url
    assert url and url != deployed.url
    row = json.loads(X[:1].to_json(orient="records"))
    caller = Caller(url, deployed.headers(), {"inputs": row})
    caller.start()
    seen: dict[str, tuple[int, int]] = {}
    try:
        caller.wait_for(10)
        t = time.monotonic()
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "nbdeploy")
        shell.user_ns.update(model=model, X_train=X[:500])
        result = shell.run_cell("dep2 = %deploy model --name ctr-churn --sample X_train --target container --force")
        assert result.error_in_exec is None, result.error_in_exec
        dep2 = shell.user_ns["dep2"]
        stop_after(dep2)
        assert dep2.version == 2 and dep2.target == "container" and dep2.endpoint_url == url
        assert {r[2] for r in caller.after(time.monotonic())} == {"2"}
        seen["redeploy"] = _tally(caller, t)
        np.testing.assert_array_equal(dep2.predict(X[500:600]), model.predict(X[500:600]))
        rec2 = dep2.info()["container"]
        print(f"\ncached image build {rec2['build_s']} s, ready {rec2['ready_s']} s")
        assert rec2["build_s"] < 30  # the dependency layers come from the build cache
        # v1 was retired once v2 answered (drained first): its container is gone, its log kept.
        assert engine.container_state("nbdeploy-ctr-churn-v1") is None
        assert deployed.status() == "stopped"
        assert "Starting production HTTP BentoServer" in deployed.logs()

        t = time.monotonic()
        back = nbdeploy.rollback("ctr-churn", 1)
        assert back.endpoint_url == url and {r[2] for r in caller.after(time.monotonic())} == {"1"}
        assert engine.container_state("nbdeploy-ctr-churn-v2") is None
        seen["rollback"] = _tally(caller, t)

        t = time.monotonic()
        first, first_url = back.info()["container"]["container"], back.url
        again = back.restart()
        second = again.info()["container"]["container"]
        assert (first, second) == ("nbdeploy-ctr-churn-v1", "nbdeploy-ctr-churn-v1-b") and again.url != first_url
        assert engine.container_state(first) is None and engine.container_state(second)[0] == "running"
        assert {r[2] for r in caller.after(time.monotonic())} == {"1"}
        seen["restart"] = _tally(caller, t)
    finally:
        caller.halt.set()
        caller.join(10)
    failed = [r for r in caller.results if r[1] != 200]
    print(f"requests through {url}: {len(caller.results)} sent, {len(failed)} failed; per swap (sent, failed): {seen}")
    assert not failed, failed[:5]
    assert all(n > 0 for n, _ in seen.values())

    again.stop()
    assert engine.container_state(second) is None
    assert again.status() == "stopped" and "Starting production HTTP BentoServer" in again.logs()


def _tally(caller: Caller, since: float) -> tuple[int, int]:
    answers = caller.since(since)
    return len(answers), sum(r[1] != 200 for r in answers)


# -- errors --------------------------------------------------------------------------------------------------------


def test_no_engine_found(monkeypatch, tmp_path, churn_data):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("NBDEPLOY_CONTAINER_ENGINE", raising=False)
    with pytest.raises(EngineError, match="no container engine found") as err:
        nbdeploy.deploy(lambda df: df["tenure"], name="ctr-none", sample=churn_data[0], target="container")
    assert "podman" in (err.value.hint or "")


def test_engine_present_but_unusable_says_what_to_fix(monkeypatch, tmp_path, churn_data):
    fake = tmp_path / "docker"
    fake.write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?' >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(EngineError, match=r"docker is installed .* but does not work") as err:
        nbdeploy.deploy(
            lambda df: df["tenure"], name="ctr-dead", sample=churn_data[0], target="container", engine="docker"
        )
    assert "start the docker daemon" in (err.value.hint or "")


def test_missing_base_image_and_wrong_options_are_clear(engine, churn_data):
    X = churn_data[0]
    with pytest.raises(TargetError, match="base image 'localhost/nbdeploy-missing:0' is not in podman") as err:
        nbdeploy.deploy(lambda df: df["tenure"], name="ctr-nobase", sample=X, target="container",
                        base_image="localhost/nbdeploy-missing:0")  # fmt: skip
    assert "load" in (err.value.hint or "")
    with pytest.raises(TargetError, match="target 'local' does not take engine"):
        nbdeploy.deploy(lambda df: df["tenure"], name="ctr-opts", sample=X, engine="podman")


def test_build_failure_shows_the_tail_of_the_build_log(engine, churn_data):
    X = churn_data[0]
    with pytest.raises(ImageBuildError, match="failed") as err:
        nbdeploy.deploy(lambda df: df["tenure"], name="ctr-badpin", sample=X, target="container",
                        requirements=["nbdeploy-no-such-package==0.0.1"])  # fmt: skip
    assert "nbdeploy-no-such-package" in (err.value.hint or "")
    assert nbdeploy.get("ctr-badpin", 1).info()["status"] == "failed"
    assert engine.container_state("nbdeploy-ctr-badpin-v1") is None
    assert Path(config.deployment_dir("ctr-badpin", 1) / "build.log").is_file()
