"""Kubernetes manifests: schema-valid for Kubernetes 1.29 to 1.34, consistent, hardened, and runnable.

No cluster runs here. The manifests are checked against the official schemas with ``kubernetes-validate --strict``,
then by our own checks (what a schema cannot see: selectors, named ports, the HPA's target, the Secret's content).
The last test runs the same Deployment under ``podman kube play`` from an image built by the container target.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from conftest import notebook

import nbdeploy
from nbdeploy import keys
from nbdeploy.capture import capture
from nbdeploy.cli import main as cli
from nbdeploy.errors import DeploymentNotFound, TargetError
from nbdeploy.registry import RUNNING, Record, Registry
from nbdeploy.targets.kubernetes import by_digest, render
from nbdeploy.targets.kubernetes.manifests import BENTOML_HOME, DATA_ROOT, KEYS_DIR

VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]
DIGEST = "sha256:" + "ab12" * 16
IMAGE = by_digest("registry.example.com/ml/nbdeploy-k8s-churn:v1", DIGEST)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

FUNC = "def score(df):\n    return (df['tenure'] * 2 + df['monthly']).round(3).tolist()\n"


def _registered(name: str, churn_data: Any, **info: Any) -> Record:
    """A version of ``name`` as the registry holds it after a container deploy (captured for real, not started)."""
    X, _ = churn_data
    artifact = capture(notebook(FUNC)["score"], X[:200])
    reg = Registry()
    rec = reg.allocate(
        name,
        "container",
        {
            "kind": artifact.kind,
            "sha256": artifact.sha256,
            "requirements": artifact.requirements,
            "lineage": artifact.lineage,
            "auth": True,
            "limits": {"max_rows": 5000},
            **info,
        },
    )
    secret = keys.new_key()
    reg.set_key(name, secret, keys.digest(secret))
    keys.write_hashes(name, [keys.digest(secret)])
    return reg.update(name, rec.version, status=RUNNING, bento_tag=f"nbdeploy-{name}:v1-{artifact.sha256[:12]}")


@pytest.fixture(scope="module")
def churn_record(churn_data) -> Record:
    return _registered("k8s-churn", churn_data)


@pytest.fixture(scope="module")
def written(churn_record, tmp_path_factory) -> dict[str, Path]:
    """The variants a user can write: autoscaled (default), fixed replicas without auth, a captured object."""
    out = tmp_path_factory.mktemp("manifests")
    files = {"hpa": nbdeploy.manifests("k8s-churn", out / "hpa", image=IMAGE, replicas=3, namespace="ml")}
    rec = replace(churn_record, name="k8s-open", info=replace(churn_record.info, auth=False))
    (out / "fixed.yaml").write_text(yaml.safe_dump_all(render(rec, IMAGE, replicas=2, hpa=False), sort_keys=False))
    files["fixed"] = out / "fixed.yaml"
    files["object"] = nbdeploy.manifests(
        notebook(FUNC)["score"], out / "obj.yaml", name="k8s-captured", sample=_sample(), hpa={"max_replicas": 4}
    )
    return files


def _sample():
    import pandas as pd

    return pd.DataFrame({"tenure": [1, 5, 30], "monthly": [20.0, 55.5, 80.25]})


def _docs(path: Path) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text())}


# -- schema ----------------------------------------------------------------------------------------------------------


@pytest.mark.heavy
@pytest.mark.parametrize("version", ["1.29.0", "1.34.0"])
def test_kubernetes_validate_strict_cli(written, version):
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    files = [str(p) for p in written.values()]
    proc = subprocess.run([exe, "-k", version, "--strict", *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kinds = {"secret", "deployment", "service", "horizontalpodautoscaler", "poddisruptionbudget"}
    assert {k for k in kinds if f"passed for resource {k}/" in proc.stdout} == kinds


@pytest.mark.heavy
def test_every_document_is_schema_valid_from_1_29_to_1_34(written):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    docs = [d for path in written.values() for d in yaml.safe_load_all(path.read_text())]
    assert len(docs) == 5 + 3 + 5  # the fixed variant without auth has no Secret and no HPA
    for version in VERSIONS:
        for doc in docs:
            kv.validate(doc, version, strict=True)
    broken = json.loads(json.dumps(docs[1]))  # the validator does refuse what it should
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, VERSIONS[0], strict=True)


# -- our own checks --------------------------------------------------------------------------------------------------


def _consistent(docs: dict[str, dict[str, Any]]) -> None:
    """What the schemas do not check: the objects point at each other correctly."""
    dep = docs["Deployment"]
    template = dep["spec"]["template"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    pod = template["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports, probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    svc = docs["Service"]["spec"]
    assert svc["selector"].items() <= template["metadata"]["labels"].items()
    assert all(p["targetPort"] in ports for p in svc["ports"])
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} == set(volumes)
    if "HorizontalPodAutoscaler" in docs:
        hpa = docs["HorizontalPodAutoscaler"]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
        assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
        assert "cpu" in container["resources"]["requests"]
        assert "replicas" not in dep["spec"]  # the autoscaler owns it
    else:
        assert dep["spec"]["replicas"] >= 1
    if "Secret" in docs:
        names = [v["secret"]["secretName"] for v in volumes.values() if "secret" in v]
        assert names == [docs["Secret"]["metadata"]["name"]]
    namespaces = {d["metadata"].get("namespace") for d in docs.values()}
    assert len(namespaces) == 1
    for doc in [*docs.values(), template]:
        for value in doc["metadata"]["labels"].values():
            assert len(value) <= 63 and _LABEL_VALUE.match(value), value
        assert all(isinstance(v, str) for v in doc["metadata"].get("annotations", {}).values())


def test_objects_refer_to_each_other(written):
    for path in written.values():
        _consistent(_docs(path))


def test_pod_is_hardened_and_writes_only_to_its_volumes(written, churn_record):
    docs = _docs(written["hpa"])
    dep = docs["Deployment"]
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1034
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False
    assert {"requests", "limits"} <= set(container["resources"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])

    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert env["NBDEPLOY_DATA_DIR"] == f"{DATA_ROOT}/v1" and env["BENTOML_HOME"] == BENTOML_HOME
    assert env["NBDEPLOY_KEYS_FILE"] == f"{KEYS_DIR}/keys.json" and env["NBDEPLOY_AUTH"] == "required"
    assert env["NBDEPLOY_MAX_ROWS"] == "5000"  # limits travel as in the other targets
    for writable in ("/tmp", BENTOML_HOME, DATA_ROOT):  # what BentoML and the request log write
        assert "emptyDir" in volumes[mounts[writable]["name"]] and not mounts[writable].get("readOnly")
    assert mounts[KEYS_DIR]["readOnly"] is True and "secret" in volumes[mounts[KEYS_DIR]["name"]]
    assert container["image"] == f"registry.example.com/ml/nbdeploy-k8s-churn@{DIGEST}"


def test_secret_holds_only_the_key_hash(written, churn_record):
    secret = _docs(written["hpa"])["Secret"]
    assert set(secret["data"]) == {"keys.json"} and "stringData" not in secret
    content = json.loads(base64.b64decode(secret["data"]["keys.json"]))
    assert content == {"sha256": keys.read_hashes("k8s-churn")} and all(_HEX64.match(h) for h in content["sha256"])
    key = Registry().key("k8s-churn")
    assert key and key not in written["hpa"].read_text()
    with pytest.raises(TargetError, match="sha256 hashes of API keys only"):
        render(churn_record, IMAGE, key_hashes=[key])
    with pytest.raises(TargetError, match="sha256 hashes"):
        render(churn_record, IMAGE, key_hashes=[])


def test_lineage_labels_annotations_and_prometheus(written, churn_record):
    docs = _docs(written["hpa"])
    lin = churn_record.info.lineage
    for doc in docs.values():
        meta = doc["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["labels"]["nbdeploy.io/name"] == "k8s-churn" and meta["labels"]["nbdeploy.io/version"] == "1"
        assert meta["labels"]["nbdeploy.io/artifact"] == churn_record.info.sha256[:16]
        assert meta["annotations"]["nbdeploy.io/artifact-sha256"] == churn_record.info.sha256
        assert meta["annotations"]["nbdeploy.io/requirements-sha256"] == lin["requirements_sha256"]
        assert meta["annotations"]["nbdeploy.io/bento"] == churn_record.bento_tag
    pod_ann = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert pod_ann["prometheus.io/scrape"] == "true" and pod_ann["prometheus.io/path"] == "/metrics"
    assert pod_ann["prometheus.io/port"] == "3000"
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 9)
    text = written["hpa"].read_text()
    assert text.startswith("# Kubernetes manifests for 'k8s-churn' v1") and "&id" not in text
    events = [e for e in nbdeploy.audit("k8s-churn").itertuples() if e.action == "manifests"]
    assert events and events[0].detail["image"] == IMAGE


def test_fixed_replicas_without_auth(written):
    docs = _docs(written["fixed"])
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget"}
    assert docs["Deployment"]["spec"]["replicas"] == 2
    env = {e["name"]: e["value"] for e in docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["NBDEPLOY_AUTH"] == "off" and "NBDEPLOY_KEYS_FILE" not in env


def test_manifests_of_a_captured_object_register_nothing_but_its_key(written):
    docs = _docs(written["object"])
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.invalid/nbdeploy-k8s-captured:unbuilt"  # to be replaced, obviously
    assert "nbdeploy.io/version" not in docs["Deployment"]["metadata"]["labels"]
    assert docs["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 4
    assert "k8s-captured" not in set(nbdeploy.deployments(all_versions=True)["name"])
    assert json.loads(base64.b64decode(docs["Secret"]["data"]["keys.json"]))["sha256"] == [
        keys.digest(Registry().key("k8s-captured") or "")
    ]


def test_cli_writes_dir_name_yaml(churn_record, tmp_path, capsys):
    assert cli(["k8s", "manifests", "k8s-churn", str(tmp_path), "--no-hpa", "--replicas", "1"]) == 0
    path = tmp_path / "k8s-churn.yaml"
    assert capsys.readouterr().out.strip() == str(path)
    docs = _docs(path)
    assert docs["Deployment"]["spec"]["replicas"] == 1 and "HorizontalPodAutoscaler" not in docs
    # without --image: the version's own image (none recorded here, so the placeholder)
    assert docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.invalid/")
    assert cli(["k8s", "manifests", "k8s-no-such", str(tmp_path)]) == 2
    assert "no deployment 'k8s-no-such'" in capsys.readouterr().err


def test_bad_options_are_clear(churn_record, churn_data):
    with pytest.raises(DeploymentNotFound):
        nbdeploy.manifests("k8s-no-such", "/tmp/unused")
    with pytest.raises(TargetError, match="not an image digest"):
        by_digest("registry.example.com/ml/x", "sha256:1234")
    assert by_digest("localhost:5000/ml/x:v1", "ab" * 32) == f"localhost:5000/ml/x@sha256:{'ab' * 32}"
    hashes = keys.read_hashes("k8s-churn")
    with pytest.raises(TargetError, match="CPU request"):
        render(churn_record, IMAGE, key_hashes=hashes, resources={"requests": {"memory": "1Gi"}})
    with pytest.raises(TargetError, match="unknown hpa option"):
        render(churn_record, IMAGE, key_hashes=hashes, hpa={"max": 3})
    with pytest.raises(TargetError, match="replicas"):
        render(churn_record, IMAGE, key_hashes=hashes, replicas=0)
    digit = Record(**{**churn_record.__dict__, "name": "3model"})
    svc = next(d for d in render(digit, IMAGE, key_hashes=hashes) if d["kind"] == "Service")
    assert svc["metadata"]["name"] == "s3model"  # a Service name must start with a letter


# -- the same manifests, run ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deployment_runs_under_podman_kube_play(churn_data, tmp_path):
    """Build the image with the container target, then run the rendered Deployment with ``podman kube play``.

    Adapted here, not in the shipped manifests: one replica published on 127.0.0.1 (podman runs each replica
    as a pod on this host), and the Secret volume replaced by a host folder (podman 4.3 cannot read the Secret).
    """
    from nbdeploy.targets._engine import find_engine

    engine = find_engine("podman")
    X, _ = churn_data
    score = notebook(FUNC)["score"]
    t0 = time.perf_counter()
    dep = nbdeploy.deploy(score, name="k8s-play", sample=X[:200], target="container", limits={"max_rows": 100})
    build_s = time.perf_counter() - t0
    dep.stop()  # the image stays; the pod below runs it
    image_id = dep.info()["container"]["image_id"]
    play = tmp_path / "play.yaml"
    try:
        path = nbdeploy.manifests("k8s-play", tmp_path, hpa=False, replicas=1)
        docs = _docs(path)
        secret, deployment = docs["Secret"], docs["Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "localhost/" + dep.info()["container"]["image"]
        port = _free_port()
        container["ports"][0].update(hostPort=port, hostIP="127.0.0.1")
        keys_dir = tmp_path / "keys"
        keys_dir.mkdir()
        _kubelet_write(keys_dir, base64.b64decode(secret["data"]["keys.json"]))
        for volume in pod["volumes"]:
            if "secret" in volume:
                volume.pop("secret")
                volume["hostPath"] = {"path": str(keys_dir), "type": "Directory"}
        play.write_text(yaml.safe_dump(deployment, sort_keys=False))
        t_play = time.perf_counter()
        engine.run(["kube", "play", str(play)], timeout=120)
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        ready_s = time.perf_counter() - t_play
        body = {"inputs": X[200:260].to_dict(orient="records")}
        assert httpx.post(f"{url}/predict", json=body, timeout=30).status_code == 401
        headers = {"authorization": f"Bearer {Registry().key('k8s-play')}"}
        resp = httpx.post(f"{url}/predict", json=body, headers=headers, timeout=30)
        assert resp.status_code == 200, resp.text
        np.testing.assert_allclose(resp.json()["predictions"], score(X[200:260]))
        too_many = {"inputs": X[:101].to_dict(orient="records")}
        assert httpx.post(f"{url}/predict", json=too_many, headers=headers, timeout=30).status_code == 413
        # A rotation reaches the pod without a restart: the kubelet swaps the Secret's files as below.
        new_key = keys.new_key()
        _kubelet_write(keys_dir, json.dumps({"sha256": [keys.digest(new_key)]}).encode())
        keys.wait_until(url, new_key, accepted=True)
        keys.wait_until(url, headers["authorization"].removeprefix("Bearer "), accepted=False)
        inspect = "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}"
        name = f"{deployment['metadata']['name']}-pod-0-{container['name']}"
        assert engine.run(["container", "inspect", "--format", inspect, name]).stdout.split() == ["true", "1034:1034"]
        print(f"\ncontainer build {build_s:.1f} s, kube play to ready {ready_s:.1f} s")
    finally:
        if play.exists():
            engine.run(["kube", "down", str(play)], check=False, timeout=120)
        engine.run(["rmi", "-f", image_id], check=False, timeout=120)
    assert engine.run(["pod", "exists", "k8s-play-pod-0"], check=False).returncode != 0


def _kubelet_write(folder: Path, content: bytes) -> None:
    """Write ``keys.json`` as the kubelet updates a Secret volume: a new timestamped folder, then an atomic
    swap of the ``..data`` symlink that ``keys.json`` points through."""
    stamp = folder / f"..{time.time_ns()}"
    stamp.mkdir()
    (stamp / "keys.json").write_bytes(content)
    (stamp / "keys.json").chmod(0o444)
    tmp = folder / "..data_tmp"
    tmp.symlink_to(stamp.name)
    tmp.replace(folder / "..data")
    if not (folder / "keys.json").is_symlink():
        (folder / "keys.json").symlink_to("..data/keys.json")


def _free_port() -> int:
    from nbdeploy.targets._process import free_port

    return free_port()
