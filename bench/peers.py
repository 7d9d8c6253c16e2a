"""The peers nbdeploy is measured against, started side by side on loopback: a hand-written
BentoML service and MLflow's ``models serve`` (in a virtual environment of its own)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from nbdeploy.targets import _process

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"

HAND_WRITTEN = textwrap.dedent(
    """
    import pickle, numpy as np, pandas as pd, bentoml

    MODEL = pickle.load(open("model.pkl", "rb"))

    @bentoml.service(workers=1)
    class HandWritten:
        @bentoml.api
        def predict(self, inputs: list[dict]) -> dict:
            return {"predictions": MODEL.predict(pd.DataFrame(inputs)).tolist()}

    @bentoml.service(workers=1)
    class HandWrittenBatched:
        @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)
        def predict(self, inputs: np.ndarray) -> np.ndarray:
            return MODEL.predict(pd.DataFrame(inputs, columns=MODEL.feature_names_in_))
    """
)


@dataclass
class Server:
    name: str
    url: str
    pid: int
    marker: str
    ready_s: float
    body: str  # "records" | "mlflow" | "array"

    def stop(self) -> None:
        _process.stop_group(self.pid, self.marker)


def _wait(url: str, path: str, pid: int, marker: str, deadline_s: float = 180) -> None:
    end = time.monotonic() + deadline_s
    with httpx.Client(trust_env=False) as http:
        while time.monotonic() < end:
            try:
                if http.get(url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if not _process.is_alive(pid, marker):
                raise RuntimeError(f"{marker} died while starting")
            time.sleep(0.05)
    raise RuntimeError(f"{marker} not ready after {deadline_s} s")


def hand_written(model_path: Path, workdir: Path, batched: bool = False) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "service.py").write_text(HAND_WRITTEN)
    shutil.copy(model_path, workdir / "model.pkl")
    port = _process.free_port()
    cls = "HandWrittenBatched" if batched else "HandWritten"
    cmd = [sys.executable, "-m", "bentoml", "serve", f"service:{cls}", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(workdir / "home")}
    started = time.monotonic()
    pid = _process.spawn(cmd, workdir / f"{cls}.log", env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    _wait(url, "/readyz", pid, f"service:{cls}")
    name = "hand-written BentoML, batchable" if batched else "hand-written BentoML"
    return Server(name, url, pid, f"service:{cls}", time.monotonic() - started, "array" if batched else "records")


def mlflow_env(sklearn_version: str) -> Path:
    """A venv with MLflow and the session's scikit-learn, made once with uv and cached in .cache/."""
    env = CACHE / f"mlflow-venv-sklearn{sklearn_version}"
    if (env / ".complete").exists():
        return env
    uv = str(Path(sys.executable).parent / "uv")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(env)], check=True)
    pins = ["mlflow>=3,<4", f"scikit-learn=={sklearn_version}", "pandas", "numpy", "cloudpickle"]
    subprocess.run([uv, "pip", "install", "-q", "--python", str(env / "bin" / "python"), *pins], check=True)
    (env / ".complete").write_text("ok")
    return env


def mlflow_serve(model_path: Path, workdir: Path, sklearn_version: str) -> Server:
    env = mlflow_env(sklearn_version)
    py = str(env / "bin" / "python")
    saved = workdir / "mlflow-model"
    if saved.exists():
        shutil.rmtree(saved)
    load = f"pickle.load(open({str(model_path)!r}, 'rb'))"
    # MLflow 3 serialises with skops and asks which types to trust: the forest's Tree, which we made ourselves
    trust = "skops_trusted_types=['sklearn.tree._tree.Tree']"
    code = f"import pickle, mlflow.sklearn; mlflow.sklearn.save_model({load}, {str(saved)!r}, {trust})"
    subprocess.run([py, "-c", code], check=True, capture_output=True)
    port = _process.free_port()
    cmd = [str(env / "bin" / "mlflow"), "models", "serve", "-m", str(saved), "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    started = time.monotonic()
    pid = _process.spawn(
        cmd,
        workdir / "mlflow.log",
        {**os.environ, "MLFLOW_TRACKING_URI": str(workdir / "mlruns"), "PATH": f"{env / 'bin'}:{os.environ['PATH']}"},
        workdir,
    )
    url = f"http://127.0.0.1:{port}"
    _wait(url, "/ping", pid, str(saved))
    return Server("MLflow models serve", url, pid, str(saved), time.monotonic() - started, "mlflow")
