"""The Kubernetes target: apply, wait, status, scale, logs, stop, failure and undo; the registry push.

What is real and what stands in, and why:
- No Kubernetes API server can run on these machines (none installs from the reachable registries, and no image
  can be pulled; see PLATFORM.md). The API server is ``kmock``'s emulator, served over real HTTP on 127.0.0.1 and
  reached through a kubeconfig file (``KUBECONFIG``), by the official ``kubernetes`` client as in production.
  kmock stores objects and answers discovery, but does no server-side apply (here an apply of a missing object
  creates it; kmock then merges later applies), ignores label selectors (the target filters again on its side),
  and runs no pods. So the test plays the deployment controller and the kubelet: when a Deployment is applied it
  creates the pods and sets their status and the Deployment's, as a scenario says (healthy, or CrashLoopBackOff).
- The image build and push are replaced in these tests (``KubernetesTarget._publish`` returns an image by digest):
  the build is the container target's, tested with podman elsewhere (and run by ``podman kube play`` in
  test_k8s_manifests.py), and the push is tested here against a real Distribution registry.
- Port-forwarding is not implemented (kmock does not speak the port-forward protocol): the URL is the Service's
  in-cluster address.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ROOT, notebook

import nbdeploy
from nbdeploy import keys
from nbdeploy.capture import capture
from nbdeploy.deployment import Deployment
from nbdeploy.errors import TargetError
from nbdeploy.images import ImageBuilder
from nbdeploy.registry import FAILED, RUNNING, Record, Registry
from nbdeploy.targets import get_target
from nbdeploy.targets.kubernetes import by_digest
from nbdeploy.targets.kubernetes import target as k8s

kmock = pytest.importorskip("kmock", reason="pip install kmock (the test extra)")
pytest.importorskip("kubernetes", reason="pip install kubernetes (the kubernetes extra)")
pytestmark = pytest.mark.heavy  # an API server (kmock) in a thread, and real captures

FUNC = "def score(df):\n    return (df['tenure'] * 2 + df['monthly']).round(3).tolist()\n"
NS = "ml"
REGISTRY = "registry.example.com/ml"
DIGEST1 = "sha256:" + "1a" * 32
DIGEST2 = "sha256:" + "2b" * 32
CRASH_LOG = "Traceback (most recent call last):\nValueError: model.pkl is truncated"
RESOURCES = {
    "apps/v1/deployments": "Deployment",
    "v1/services": "Service",
    "v1/secrets": "Secret",
    "v1/pods": "Pod",
    "v1/events": "Event",
    "autoscaling/v2/horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "policy/v1/poddisruptionbudgets": "PodDisruptionBudget",
}


# -- the stand-in API server -----------------------------------------------------------------------------------------


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator, plus: an apply (PATCH, application/apply-patch+yaml) of a missing object creates it, as
    server-side apply does, and a ``controller`` hook that plays the deployment controller and the kubelet."""

    controller: Callable[[ApiServer, Any, dict[str, Any]], None] | None = None

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        applying = (
            request.action == kmock.action.UPDATE
            and request.subresource is None
            and "apply-patch" in request.headers.get("Content-Type", "")
        )
        key = (request.resource, request.namespace, request.name)
        if applying and (key not in self.objects or self.objects[key].deleted):
            async with self._lock:
                if key in self.objects:
                    self.objects[key].create(request.data)
                else:
                    self.objects[key] = request.data
            self._react(request)
            return web.json_response(self.objects[key].raw, status=201)
        response = await super()._handle(request)
        self._react(request)
        if request.method == "DELETE" and request.resource == kmock.resource("apps/v1/deployments"):
            pods = kmock.resource("v1/pods")  # the garbage collector: a Deployment's pods go with it
            for key, obj in list(self.objects.items()):
                if key[0] != pods or obj.deleted:
                    continue
                if ((obj.raw.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/name") == request.name:
                    obj.delete()
        return response

    def _react(self, request: Any) -> None:
        if self.controller is not None and request.resource == kmock.resource("apps/v1/deployments"):
            key = (request.resource, request.namespace, request.name)
            obj = self.objects[key].raw if key in self.objects and not self.objects[key].deleted else None
            if obj is not None:
                self.controller(self, request, obj)


class StandIn:
    """The stand-in API server on 127.0.0.1 in a thread of its own, and a kubeconfig pointing at it."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.logs: dict[str, str] = {}
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        async with ApiServer() as server, kmock.Server(server) as http:
            for res, kind in RESOURCES.items():
                server.resources[res] = kmock.ResourceInfo(
                    kind=kind, namespaced=True, verbs={"get", "list", "patch", "delete"}
                )
            server["get", kmock.resource("v1/pods"), kmock.subresource("log")] << (
                lambda req: self.logs.get(req.name, "").encode()
            )
            self.server, self.url = server, str(http.url).rstrip("/")
            self.loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> StandIn:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stand-in API server did not start in 10 s")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "standin", "user": "tester", "namespace": NS}}],
            "current-context": "kmock",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the server's thread (its objects are not thread-safe)."""

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def requests(self) -> list[Any]:
        return self.on_loop(lambda: list(self.server))

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            key = (kmock.resource(resource), NS, name)
            if key not in self.server.objects or self.server.objects[key].deleted:
                return None
            return dict(self.server.objects[key].raw)

        return self.on_loop(read)

    def put(self, resource: str, name: str, body: dict[str, Any]) -> None:
        def write() -> None:
            self.server.objects[kmock.resource(resource), NS, name] = body

        self.on_loop(write)

    def live(self) -> set[str]:
        """``Kind/name`` of every object the server holds, pods included."""

        def names() -> set[str]:
            return {
                f"{RESOURCES[f'{r.group}/{r.version}/{r.plural}'.lstrip('/')]}/{n}"
                for (r, _, n), obj in self.server.objects.items()
                if not obj.deleted
            }

        return self.on_loop(names)


def _pod(dep: dict[str, Any], index: int, ready: bool, waiting: str | None = None) -> dict[str, Any]:
    labels = dep["spec"]["template"]["metadata"]["labels"]
    name = f"{dep['metadata']['name']}-v{labels['nbdeploy.io/version']}-{index}"
    state = {"waiting": {"reason": waiting, "message": "back-off restarting"}} if waiting else {"running": {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "containerStatuses": [{"name": "service", "restartCount": 3 if waiting else 0, "state": state}],
        },
    }


def healthy(server: ApiServer, request: Any, dep: dict[str, Any]) -> None:
    """The controllers of a healthy cluster, one step per request: an apply makes the pods (not ready); the HPA
    sets ``replicas`` to its minimum; a later read of the Deployment finds every pod ready."""
    pods, key = kmock.resource("v1/pods"), (request.resource, NS, request.name)
    hpa_key = (kmock.resource("autoscaling/v2/horizontalpodautoscalers"), NS, request.name)
    desired = int(dep["spec"].get("replicas", 1))
    if request.method == "GET" and hpa_key in server.objects and not server.objects[hpa_key].deleted:
        desired = max(desired, int(server.objects[hpa_key].raw["spec"]["minReplicas"]))
        server.objects[key].patch({"spec": {"replicas": desired}})
    status = dep.get("status") or {}
    if request.method == "PATCH" or int(status.get("replicas", 0)) != desired:
        for old in [k for k in server.objects if k[0] == pods]:
            server.objects[old].delete()  # the old ReplicaSet's pods go (maxSurge is not modelled)
        for i in range(desired):
            pod = _pod(dep, i, ready=False)
            server.objects[pods, NS, pod["metadata"]["name"]] = pod
        counts = {"replicas": desired, "updatedReplicas": desired, "readyReplicas": 0, "availableReplicas": 0}
        server.objects[key].patch({"status": {"observedGeneration": 1, **counts}})
    elif request.method == "GET" and int(status.get("readyReplicas", 0)) < desired:
        for i in range(desired):
            pod = _pod(dep, i, ready=True)
            server.objects[pods, NS, pod["metadata"]["name"]] = pod
        server.objects[key].patch({"status": {"readyReplicas": desired, "availableReplicas": desired}})


def crash_loop(server: ApiServer, request: Any, dep: dict[str, Any]) -> None:
    """Every pod of the applied version crashes at start and is backed off."""
    if request.method == "PATCH" and dep["spec"]["template"]["metadata"]["labels"]["nbdeploy.io/version"] != "1":
        pod = _pod(dep, 0, ready=False, waiting="CrashLoopBackOff")
        server.objects[kmock.resource("v1/pods"), NS, pod["metadata"]["name"]] = pod
        server.objects[request.resource, NS, request.name].patch({"status": {"observedGeneration": 1}})
    elif dep["spec"]["template"]["metadata"]["labels"]["nbdeploy.io/version"] == "1":
        healthy(server, request, dep)


# -- fixtures --------------------------------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    monkeypatch.setattr(k8s, "POLL_S", 0.05)
    with StandIn(tmp_path / "kubeconfig") as standin:
        monkeypatch.setenv("KUBECONFIG", str(standin.kubeconfig))
        yield standin


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Replace the build and push (see the module docstring): each version's image is named by a fixed digest."""
    digests = {1: DIGEST1, 2: DIGEST2}

    def publish(self: k8s.KubernetesTarget, record: Record) -> tuple[str, str, dict[str, Any]]:
        digest = digests[record.version]
        return by_digest(f"{REGISTRY}/nbdeploy-{record.name}:v{record.version}", digest), digest, {}

    monkeypatch.setattr(k8s.KubernetesTarget, "_publish", publish)
    monkeypatch.setattr(ImageBuilder, "prepare", lambda self: {})  # no engine or base image: nothing is built
    return {"1": DIGEST1, "2": DIGEST2}


def _sample(churn_data: Any) -> Any:
    X, _ = churn_data
    return X[:200]


def _applies(standin: StandIn) -> list[Any]:
    return [r for r in standin.requests() if r.method == "PATCH"]


# -- apply, wait, status, logs, scale, stop --------------------------------------------------------------------------


def test_deploy_applies_every_object_server_side_and_waits(cluster, published, churn_data):
    cluster.server.controller = healthy
    score = notebook(FUNC)["score"]
    t0 = time.perf_counter()
    dep = nbdeploy.deploy(score, name="k8s-ok", sample=_sample(churn_data), target="kubernetes", registry=REGISTRY)
    took = time.perf_counter() - t0
    try:
        applies = _applies(cluster)
        kinds = [r.data["kind"] for r in applies]
        assert kinds == ["Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
        for r in applies:
            assert r.params == {"fieldManager": "nbdeploy", "force": "true"}, r.url
            assert r.headers["Content-Type"] == "application/apply-patch+yaml"
            assert r.url.path.startswith(("/api/v1/namespaces/ml/", "/apis/")) and f"/namespaces/{NS}/" in r.url.path
        (container,) = applies[1].data["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"{REGISTRY}/nbdeploy-k8s-ok@{DIGEST1}"
        assert any(r.method == "GET" and r.url.path.endswith("/deployments/k8s-ok") for r in cluster.requests())

        info = dep.info()
        kube = info["kubernetes"]
        assert kube["context"] == "kmock" and kube["namespace"] == NS and kube["digest"] == DIGEST1
        assert kube["image"] == container["image"] and kube["replicas"] == 2
        assert kube["objects"] == [
            "Secret/k8s-ok-api-keys",
            "Deployment/k8s-ok",
            "Service/k8s-ok",
            "HorizontalPodAutoscaler/k8s-ok",
            "PodDisruptionBudget/k8s-ok",
        ]
        assert kube["hpa"] == {"min_replicas": 2, "max_replicas": 6, "cpu_utilization": 70}
        assert dep.url == "http://k8s-ok.ml.svc.cluster.local"
        assert "port-forward svc/k8s-ok 8080:80" in kube["port_forward"]

        assert dep.status() == "running"
        live = info["cluster"]
        assert (live["status"], live["ready"], live["desired"]) == ("running", 2, 2)
        assert [p["name"] for p in live["pods"]] == ["k8s-ok-v1-0", "k8s-ok-v1-1"]

        cluster.logs.update({"k8s-ok-v1-0": "ready on 3000", "k8s-ok-v1-1": "one request"})
        assert dep.logs() == "==> pod k8s-ok-v1-0 <==\nready on 3000\n\n==> pod k8s-ok-v1-1 <==\none request"
        print(f"\ndeploy through the stand-in (capture, bento, apply, wait): {took:.1f} s")
    finally:
        dep.stop()
    assert cluster.live() == set()  # every object gone (the pods with their Deployment)
    deletes = [r.url.path.rsplit("/", 2)[-2:] for r in cluster.requests() if r.method == "DELETE"]
    assert deletes == [
        ["poddisruptionbudgets", "k8s-ok"],
        ["horizontalpodautoscalers", "k8s-ok"],
        ["services", "k8s-ok"],
        ["deployments", "k8s-ok"],
        ["secrets", "k8s-ok-api-keys"],
    ]
    assert dep.status() == "stopped"


def test_status_reports_progress_and_events(cluster, published, churn_data):
    rec = _registered("k8s-events", churn_data)
    target = k8s.KubernetesTarget(registry=REGISTRY, hpa=False, replicas=1)
    cluster.server.controller = healthy
    running = target.deploy(rec, "unused")
    rec = Registry().update(rec.name, rec.version, state={**rec.state, **running.info})
    try:
        cluster.put(
            "v1/events",
            "k8s-events.1",
            {
                "metadata": {"name": "k8s-events.1", "namespace": NS},
                "involvedObject": {"kind": "Pod", "name": "k8s-events-v1-0"},
                "type": "Normal",
                "reason": "Pulled",
                "message": "Successfully pulled image",
                "lastTimestamp": "2026-11-28T10:00:00Z",
            },
        )
        cluster.put(
            "v1/events",
            "other.1",
            {"metadata": {"name": "other.1"}, "involvedObject": {"kind": "Pod", "name": "other-1"}, "reason": "X"},
        )
        cluster.server.controller = None
        dep = cluster.get("apps/v1/deployments", "k8s-events")
        assert dep is not None
        cluster.put("apps/v1/deployments", "k8s-events", {**dep, "status": {"observedGeneration": 1, "replicas": 1}})
        live = target.describe(rec)
        assert (live["status"], live["ready"], live["desired"]) == ("starting", 0, 1)
        assert [(e["reason"], e["object"]) for e in live["events"]] == [("Pulled", "Pod/k8s-events-v1-0")]
        cluster.put("apps/v1/deployments", "k8s-events", {**dep, "spec": {**dep["spec"], "replicas": 0}})
        assert target.status(rec) == "stopped"
    finally:
        target.stop(rec)


def test_scale_sets_replicas_or_the_autoscalers_minimum(cluster, published, churn_data):
    cluster.server.controller = healthy
    dep = nbdeploy.deploy(
        notebook(FUNC)["score"], name="k8s-scale", sample=_sample(churn_data), target="kubernetes", registry=REGISTRY
    )
    try:
        before = len(_applies(cluster))
        assert dep.scale(8) is dep
        hpa = cluster.get("autoscaling/v2/horizontalpodautoscalers", "k8s-scale")
        assert hpa is not None and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (8, 8)
        again = _applies(cluster)[before:]
        assert [r.data["kind"] for r in again][1:4] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
        assert "replicas" not in again[1].data["spec"]  # the HPA owns it: writing it would fight the autoscaler
        assert all(r.params["fieldManager"] == "nbdeploy" for r in again)
        assert dep.info()["kubernetes"]["hpa"]["min_replicas"] == 8
        assert next(e["detail"] for e in Registry().events("k8s-scale") if e["action"] == "scale")["replicas"] == 8
        dep.scale(3)  # below the maximum: the maximum stays
        hpa = cluster.get("autoscaling/v2/horizontalpodautoscalers", "k8s-scale")
        assert hpa is not None and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 8)
        with pytest.raises(TargetError, match="positive integer"):
            dep.scale(0)
    finally:
        dep.stop()

    rec = _registered("k8s-fixed", churn_data)  # without an HPA the Deployment's replicas change
    target = k8s.KubernetesTarget(registry=REGISTRY, hpa=False, replicas=1)
    rec = Registry().update(rec.name, 1, state={**rec.state, **target.deploy(rec, "unused").info})
    try:
        info = target.scale(rec, 4)
        deployment = cluster.get("apps/v1/deployments", "k8s-fixed")
        assert deployment is not None and deployment["spec"]["replicas"] == 4
        assert info["replicas"] == 4 and info["hpa"] is None
        assert cluster.get("autoscaling/v2/horizontalpodautoscalers", "k8s-fixed") is None
    finally:
        target.stop(rec)


# -- failure ---------------------------------------------------------------------------------------------------------


def test_crash_loop_fails_the_deploy_names_pod_reason_log_and_undoes(cluster, published, churn_data):
    cluster.server.controller = crash_loop
    cluster.logs["k8s-crash-v2-0"] = "starting\n" + CRASH_LOG
    score = notebook(FUNC)["score"]
    # v1 is healthy and running; v2 crashes: the deploy fails, and v1's objects are put back as they were.
    v1 = nbdeploy.deploy(score, name="k8s-crash", sample=_sample(churn_data), target="kubernetes", registry=REGISTRY)
    try:
        v1_objects = {
            ref: _strip(cluster.get(_resource(ref), ref.split("/")[1])) for ref in v1.info()["kubernetes"]["objects"]
        }
        with pytest.raises(TargetError) as err:
            nbdeploy.deploy(
                score, name="k8s-crash", sample=_sample(churn_data), target="kubernetes", registry=REGISTRY,
                replicas=3,
            )  # fmt: skip
        message = str(err.value)
        assert "pod k8s-crash-v2-0" in message and "CrashLoopBackOff" in message
        assert "ValueError: model.pkl is truncated" in message
        assert Registry().get("k8s-crash", 2).status == FAILED
        assert Registry().get("k8s-crash", 1).status == RUNNING
        restored = cluster.get("apps/v1/deployments", "k8s-crash")
        assert restored is not None
        (container,) = restored["spec"]["template"]["spec"]["containers"]
        assert container["image"].endswith(DIGEST1)  # v1's image, not v2's
        assert restored["metadata"]["labels"]["nbdeploy.io/version"] == "1"
        for ref, before in v1_objects.items():
            assert _strip(cluster.get(_resource(ref), ref.split("/")[1])) == before, ref
    finally:
        v1.stop()
    assert cluster.live() == set()

    # A first version that crashes leaves nothing behind.
    cluster.logs["k8s-crash2-v2-0"] = CRASH_LOG
    rec = _registered("k8s-crash2", churn_data, version=2)
    target = k8s.KubernetesTarget(registry=REGISTRY)
    with pytest.raises(TargetError, match="CrashLoopBackOff"):
        target.deploy(rec, "unused")
    assert cluster.live() == set()


def test_deadline_and_unschedulable_name_the_pod(cluster, published, churn_data):
    def unschedulable(server: ApiServer, request: Any, dep: dict[str, Any]) -> None:
        if request.method == "PATCH":
            pod = _pod(dep, 0, ready=False)
            pod["status"] = {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
                ],
            }
            server.objects[kmock.resource("v1/pods"), NS, pod["metadata"]["name"]] = pod

    cluster.server.controller = unschedulable
    rec = _registered("k8s-pending", churn_data)
    target = k8s.KubernetesTarget(registry=REGISTRY, timeout=0.3)
    with pytest.raises(TargetError, match=r"pod k8s-pending-v1-0 is Unschedulable \(0/3 nodes\)"):
        target.deploy(rec, "unused")
    cluster.server.controller = lambda server, request, dep: None  # no pod ever comes: the deadline
    with pytest.raises(TargetError, match=r"not ready after 0 s \(0/2 ready\) \(no pod was created\)"):
        target.deploy(rec, "unused")
    assert cluster.live() == set()


# -- options ---------------------------------------------------------------------------------------------------------


def test_options_are_checked_before_anything_is_built(cluster, churn_data, tmp_path, monkeypatch):
    score, sample = notebook(FUNC)["score"], _sample(churn_data)
    with pytest.raises(TargetError, match="registry, replicas only apply to target='kubernetes'"):
        nbdeploy.deploy(score, name="k8s-opt", sample=sample, target="container", registry=REGISTRY, replicas=2)
    with pytest.raises(TargetError, match="needs registry="):
        nbdeploy.deploy(score, name="k8s-opt", sample=sample, target="kubernetes")
    with pytest.raises(TargetError, match="port= is not for the kubernetes target"):
        nbdeploy.deploy(score, name="k8s-opt", sample=sample, target="kubernetes", registry=REGISTRY, port=8080)
    with pytest.raises(TargetError, match=r"kube context 'prod' is not in .*pass context= one of: kmock"):
        nbdeploy.deploy(score, name="k8s-opt", sample=sample, target="kubernetes", registry=REGISTRY, context="prod")
    with pytest.raises(TargetError, match="replicas must be a positive integer"):
        get_target("kubernetes", registry=REGISTRY, replicas=0)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(TargetError, match="no usable kubeconfig"):
        nbdeploy.deploy(score, name="k8s-opt", sample=sample, target="kubernetes", registry=REGISTRY)
    assert "k8s-opt" not in set(nbdeploy.deployments(all_versions=True)["name"])  # refused before any version
    local = Registry().allocate("k8s-local", "local", {"auth": False})
    with pytest.raises(TargetError, match="scale is for the kubernetes target"):
        Deployment(Registry().update("k8s-local", local.version, status=RUNNING)).scale(2)
    Registry().update("k8s-local", local.version, status="stopped")


# -- the registry push -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_push_returns_the_registry_digest_and_pull_by_digest_works(tmp_path):
    """A real Distribution registry (Debian's docker-registry) on 127.0.0.1: push, compare digests, pull back."""
    from nbdeploy.targets._engine import find_engine, loopback_registry
    from nbdeploy.targets._process import free_port

    binary = shutil.which("docker-registry")
    if binary is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["bash", str(ROOT / "scripts" / "podman-setup.sh")], check=True, timeout=600)
        binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed and cannot be here (not root or not Debian)")
    engine = find_engine("podman")
    base = "localhost/nbdeploy-python:3.11"
    if engine.image_id(base) is None:
        pytest.skip(f"no {base}: run `nbdeploy base-image build` first")
    port = free_port()
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "storage")}, "delete": {"enabled": True}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    token = os.urandom(16).hex()
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "token").write_text(token)
    (tmp_path / "ctx" / "Containerfile").write_text(f"FROM {base}\nCOPY token /token\n")
    local = f"localhost/nbdeploy-regtest:{token[:12]}"
    registry = f"127.0.0.1:{port}"
    dest = f"{registry}/ml/nbdeploy-regtest:v1"
    assert (
        loopback_registry(dest)
        and loopback_registry("[::1]:5000/x")
        and loopback_registry("localhost:5000/x")
        and not loopback_registry("registry.example.com/ml/x:v1")
    )
    log = open(tmp_path / "registry.log", "wb")  # noqa: SIM115 - the registry writes to it until stopped
    proc = subprocess.Popen(
        [binary, "serve", str(tmp_path / "config.yml")], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    pulled = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{registry}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "registry.log").read_text()
            assert time.monotonic() < deadline, "the registry did not answer /v2/ in 30 s"
            time.sleep(0.1)
        engine.run(["build", "-t", local, str(tmp_path / "ctx")], timeout=300)
        # The target's own publish step, with the image recorded as the container target records a build it made.
        image_id = engine.image_id(local)
        built = {"engine": "podman", "image": local.removeprefix("localhost/"), "image_id": image_id}
        rec = Record(name="regtest", version=1, target="kubernetes", status="starting", state={"container": built})
        t0 = time.perf_counter()
        ref, digest, info = k8s.KubernetesTarget(registry=f"{registry}/ml", engine="podman")._publish(rec)
        push_s = time.perf_counter() - t0
        dest = f"{registry}/ml/{built['image']}"
        assert ref == by_digest(dest, digest) and info["container"]["image_id"] == image_id
        assert digest == engine.push(local, f"{registry}/ml/nbdeploy-regtest:v1")  # the helper alone, by tag
        accept = ", ".join(
            [
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ]
        )
        for tag in (token[:12], "v1"):
            url = f"http://{registry}/v2/ml/nbdeploy-regtest/manifests/{tag}"
            resp = httpx.get(url, headers={"accept": accept})
            assert resp.status_code == 200, resp.text
            assert resp.headers["docker-content-digest"] == digest
        engine.run(["rmi", "-f", local])
        assert engine.image_id(local) is None
        pulled = by_digest(dest, digest)
        t1 = time.perf_counter()
        engine.run(["pull", "--tls-verify=false", pulled], timeout=300)
        pull_s = time.perf_counter() - t1
        out = engine.run(["run", "--rm", "--pull", "never", pulled, "cat", "/token"], timeout=120).stdout
        assert out.strip() == token
        print(f"\npush {push_s:.1f} s (digest {digest[:19]}… = registry's), pull by digest {pull_s:.1f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for ref in (local, pulled):
            if ref:
                engine.run(["rmi", "-f", ref], check=False)


# -- helpers ---------------------------------------------------------------------------------------------------------


def _registered(name: str, churn_data: Any, version: int = 1) -> Record:
    """A version of ``name`` as the registry holds it before its target starts (captured for real, key made)."""
    X, _ = churn_data
    artifact = capture(notebook(FUNC)["score"], X[:200])
    reg = Registry()
    info = {"kind": artifact.kind, "sha256": artifact.sha256, "lineage": artifact.lineage, "auth": True}
    rec = reg.allocate(name, "kubernetes", info)
    while rec.version < version:
        rec = reg.allocate(name, "kubernetes", info)
    secret = keys.new_key()
    reg.set_key(name, secret, keys.digest(secret))
    keys.write_hashes(name, [keys.digest(secret)])
    return reg.update(name, rec.version, bento_tag=f"nbdeploy-{name}:v{rec.version}-{artifact.sha256[:12]}")


_PLURALS = {
    "Secret": "v1/secrets",
    "Service": "v1/services",
    "Deployment": "apps/v1/deployments",
    "HorizontalPodAutoscaler": "autoscaling/v2/horizontalpodautoscalers",
    "PodDisruptionBudget": "policy/v1/poddisruptionbudgets",
}


def _resource(ref: str) -> str:
    return _PLURALS[ref.split("/")[0]]


def _strip(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if obj is None else {k: v for k, v in obj.items() if k != "status"}
