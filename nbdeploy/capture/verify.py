"""Prove the artifact runs from its requirements alone: a fresh venv, the service's own code, the sample.

The environment is built with uv from the pinned requirements only (never the session's
site-packages) and cached under ``NBDEPLOY_HOME/envs`` by the hash of those requirements.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .. import config
from ..errors import VerificationError
from . import ModelArtifact

_RUNTIME_SRC = Path(__file__).resolve().parent.parent / "runtime"

_REPLAY = """
import json, sys
from pathlib import Path
from nbdeploy_runtime.model import Predictor
art = Path(sys.argv[1])
predictor = Predictor(art)
inputs = json.loads((art / "sample.json").read_text())
preds = predictor.predict(inputs)
import importlib.metadata as md
versions = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in md.distributions()}
(art / "result.json").write_text(json.dumps({"predictions": preds, "versions": versions}))
"""


@dataclass(frozen=True)
class Verification:
    env: Path
    cached: bool
    seconds: float
    rows: int


def requirements_hash(requirements: list[str], python: str) -> str:
    text = "\n".join(sorted(requirements)) + f"\npython=={python}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _uv() -> str:
    local = Path(sys.executable).parent / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if not found:
        raise VerificationError("verification needs 'uv' (it comes with bentoml)", hint="pip install uv")
    return found


def _run(cmd: list[str], what: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_NATIVE_TLS": "true", "VIRTUAL_ENV": ""}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise VerificationError(f"{what} failed:\n{(out.stderr or out.stdout)[-2000:]}")
    return out


def environment(requirements: list[str], wheels: list[str] | None = None) -> tuple[Path, bool]:
    """The cached venv for these requirements, building it if needed; (path, was it cached)."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    key = requirements_hash(requirements + [Path(w).name for w in wheels or []], python)
    env = config.home() / "envs" / key
    if (env / ".complete").exists():
        return env, True
    if env.exists():
        shutil.rmtree(env)
    env.parent.mkdir(parents=True, exist_ok=True)
    uv = _uv()
    base = getattr(sys, "_base_executable", sys.executable)
    _run([uv, "venv", "-q", "--python", base, str(env)], "creating the verification environment")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as reqs:
        reqs.write("\n".join(requirements) + "\n")
    try:
        _run(
            [uv, "pip", "install", "-q", "--python", str(env / "bin" / "python"), "-r", reqs.name, *(wheels or [])],
            "installing the requirements into a fresh environment",
        )
    finally:
        os.unlink(reqs.name)
    (env / ".complete").write_text("\n".join(requirements))
    return env, False


def _session_versions() -> dict[str, str]:
    return {(d.metadata["Name"] or "").lower().replace("_", "-"): d.version for d in metadata.distributions()}


def verify(artifact: ModelArtifact) -> Verification:
    """Replay the sample's probe rows in a fresh environment; predictions must equal the session's."""
    started = time.perf_counter()
    expected = artifact.probe_predictions
    env, cached = environment(artifact.requirements, artifact.wheels)
    with tempfile.TemporaryDirectory(prefix="nbdeploy-verify-") as tmp:
        root = Path(tmp)
        art = root / "artifact"
        art.mkdir()
        (art / "model.pkl").write_bytes(artifact.payload)
        (art / "meta.json").write_text(json.dumps(artifact.meta("verify")))
        (art / "sample.json").write_text(json.dumps(artifact.probe_inputs))
        shutil.copytree(_RUNTIME_SRC, root / "nbdeploy_runtime", ignore=shutil.ignore_patterns("__pycache__"))
        out = subprocess.run(
            [str(env / "bin" / "python"), "-c", _REPLAY, str(art)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=root,
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": os.environ.get("HOME", "/tmp"),
                "PYTHONPATH": str(root),
                "NBDEPLOY_ARTIFACT_SHA256": artifact.sha256,
            },
        )
        if out.returncode != 0:
            raise VerificationError(
                _explain_failure(out.stderr), hint=f"requirements: {', '.join(artifact.requirements)}"
            )
        result = json.loads((art / "result.json").read_text())
    if result["predictions"] != expected:
        mine = _session_versions()
        differ = [f"{k} {v} (session {mine[k]})" for k, v in sorted(result["versions"].items()) if mine.get(k, v) != v]
        n_diff = sum(a != b for a, b in zip(result["predictions"], expected, strict=False))
        raise VerificationError(
            f"in a fresh environment the model gives different predictions on {n_diff} of {len(expected)} rows"
            + (f"; packages that differ from the session: {', '.join(differ)}" if differ else ""),
            hint="pin the session's versions (remove overrides from requirements=[...])",
        )
    return Verification(env=env, cached=cached, seconds=time.perf_counter() - started, rows=len(expected))


def _explain_failure(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else "no output"
    if "ModuleNotFoundError" in last or "No module named" in last:
        module = last.split("No module named", 1)[-1].strip(" '\"")
        return (
            f"the model needs module '{module}', which its requirements do not install "
            f"(pass requirements=['<the package providing {module.split('.')[0]}>'])"
        )
    return "the artifact fails in a fresh environment built from its requirements: " + last
