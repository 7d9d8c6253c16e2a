"""The Kubernetes target: the version's service image, pushed to a registry, applied to a cluster and waited for.

``deploy`` builds the image with ``nbdeploy.images`` (the container target's build, reused if the engine has it),
pushes it to ``registry`` and renders the manifests (``manifests.render``) with the image by digest, so every pod
runs the bytes that were built. Each object is applied with server-side apply (field manager ``nbdeploy``, forced:
nbdeploy owns what it renders), through the official ``kubernetes`` client, to the current kube context or
``context=``. The rollout is waited for as ``kubectl rollout status`` does; a pod that cannot run (image pull, crash
loop, unschedulable) or the deadline fails the deploy with the pod, the reason and its last log lines, and what was
applied is undone: deleted, or, when a previous version owned these objects, put back as it was.

One name is one set of objects (Deployment ``NAME``, Service, ...): a new version updates them in place and the
Deployment rolls over (``maxUnavailable: 0``), so ``stop`` of an older version leaves objects that a newer version
now owns alone.

The Service's address (``http://NAME.NAMESPACE.svc.cluster.local``) is the deployment's URL. It answers from inside
the cluster (a notebook server running there, e.g. JupyterHub on Kubernetes); from elsewhere run the recorded
``kubectl port-forward`` command and use ``nbdeploy.client`` against the forwarded port. nbdeploy does not
port-forward by itself: it could not be tested here (no API server runs on these machines, and the stand-in the
tests use, kmock, speaks HTTP but not the port-forward stream protocol).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ... import keys
from ...errors import TargetError
from ...images import ImageBuilder
from ...registry import Record
from ..base import Running, Target
from .cluster import Cluster, call, connect, describe_error
from .manifests import DEFAULT_REPLICAS, MANAGER, SERVICE_PORT_EXTERNAL, by_digest, render
from .objects import as_applied, condition, name_of, pod_failure, pod_summary, recent_events, rollout, scaling

ROLLOUT_DEADLINE_S = 300.0  # a first pull of a ~600 MB image plus the startup probe's 120 s
POLL_S = 1.0
LOG_LINES = 20


def recorded(record: Record) -> dict[str, Any]:
    return dict(record.state.get("kubernetes") or {})


def _kref(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


_API_VERSIONS = {
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}


class KubernetesTarget(Target):
    """Run a version on a Kubernetes cluster; ``registry`` is where the cluster pulls images from.

    ``replicas`` (default 2) is the HPA's minimum (it scales to 3x at 70 % CPU) or, with ``hpa=False``, the
    fixed count. ``context``/``namespace`` default to the kubeconfig's current context and its namespace.
    ``engine`` and ``base_image`` choose the image build's engine and base, as for the container target.
    """

    name = "kubernetes"
    no_port = "the Service listens on port 80"

    def __init__(
        self,
        registry: str | None = None,
        replicas: int | None = None,
        context: str | None = None,
        namespace: str | None = None,
        engine: str | None = None,
        base_image: str | None = None,
        hpa: bool = True,
        timeout: float = ROLLOUT_DEADLINE_S,
    ) -> None:
        if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1):
            raise TargetError(f"replicas must be a positive integer, got {replicas!r}")
        self._registry = registry.rstrip("/") if registry else None
        self._replicas = replicas
        self._context = context
        self._namespace = namespace
        self._hpa = hpa
        self._timeout = timeout
        self._images = ImageBuilder(engine=engine, base_image=base_image)
        self.poll_s = POLL_S

    # -- before the bento is built -------------------------------------------------------------------------------

    def prepare(self) -> dict[str, Any]:
        """Check the registry option, the kube context and the API server, then the container engine and base
        image, all before anything is built; return the bento's image options."""
        if not self._registry:
            raise TargetError(
                "the kubernetes target needs registry=",
                hint='a registry the cluster pulls from, e.g. registry="registry.example.com/ml" '
                "(log in first: `podman login registry.example.com`)",
            )
        cluster = connect(self._context, self._namespace)
        call(cluster, "reach the API server", lambda: cluster.client.request("get", "/version", serialize=False))
        return self._images.prepare()

    # -- the Target contract -------------------------------------------------------------------------------------

    def _cluster(self, record: Record) -> Cluster:
        rec = recorded(record)
        return connect(self._context or rec.get("context"), self._namespace or rec.get("namespace"))

    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running:
        self.check_port_option(port)
        cluster = self._cluster(record)
        rec = recorded(record)
        image, digest, built = self._publish(record)
        replicas = self._replicas or rec.get("replicas") or DEFAULT_REPLICAS
        hpa: bool | dict[str, int] = self._hpa
        if self._hpa and self._replicas is None and rec.get("hpa"):
            hpa = dict(rec["hpa"])  # a restart or rollback keeps the scaling it had
        docs = self._render(record, image, cluster, replicas, hpa)
        before = self._snapshot(cluster, docs)
        t0 = time.perf_counter()
        try:
            for doc in docs:
                call(cluster, f"apply {_kref(doc)}", lambda d=doc: cluster.apply(d))
            self._wait(cluster, record, docs)
        except BaseException:  # failed or interrupted: nothing half-applied stays
            self._undo(cluster, docs, before)
            raise
        service = next(d for d in docs if d["kind"] == "Service")["metadata"]["name"]
        info = {
            "context": cluster.context,
            "namespace": cluster.namespace,
            "registry": self._registry or rec.get("registry"),
            "image": image,
            "digest": digest,
            "objects": [_kref(d) for d in docs],
            "replicas": replicas,
            "hpa": scaling(docs),
            "ready_s": round(time.perf_counter() - t0, 2),
            # an in-cluster client has no kubeconfig context to name
            "port_forward": ("kubectl " if cluster.context == "in-cluster" else f"kubectl --context {cluster.context} ")
            + f"-n {cluster.namespace} port-forward svc/{service} 8080:{SERVICE_PORT_EXTERNAL}",
            **{k: v for k, v in built.items() if k == "push_s"},
        }
        out: dict[str, Any] = {"kubernetes": info}
        if built.get("container"):
            out["container"] = built["container"]
        return Running(url=f"http://{service}.{cluster.namespace}.svc.cluster.local", info=out)

    def status(self, record: Record) -> str:
        """``running`` (rolled out, all ready), ``starting``, ``failed`` (a pod cannot run, the rollout stalled, or
        the Deployment is gone) or ``stopped`` (scaled to zero, or a newer version owns the objects)."""
        return str(self.describe(record)["status"])

    def describe(self, record: Record, events: int = 10) -> dict[str, Any]:
        """Replicas ready/desired, each pod's state, and the latest events of the Deployment, its ReplicaSets and
        pods: what ``Deployment.info()`` shows under ``cluster``."""
        cluster = self._cluster(record)
        name = record.name
        dep = call(cluster, f"read Deployment/{name}", lambda: cluster.get("apps/v1", "Deployment", name))
        out: dict[str, Any] = {"context": cluster.context, "namespace": cluster.namespace}
        if dep is None:
            return {**out, "status": "failed", "reason": f"Deployment/{name} is not on the cluster"}
        labels = (dep.get("metadata") or {}).get("labels") or {}
        done, desired, counts = rollout(dep)
        pods = call(cluster, "list pods", lambda: self._pods(cluster, record))
        out.update(desired=desired, **counts, pods=[pod_summary(p) for p in pods])
        failure = next((f for f in map(pod_failure, pods) if f), None)
        stalled = condition(dep, "Progressing")
        if labels.get("nbdeploy.io/version") not in (None, str(record.version)):
            out.update(status="stopped", reason=f"version {labels['nbdeploy.io/version']} now owns Deployment/{name}")
        elif failure:
            out.update(status="failed", reason=f"pod {failure[0]}: {failure[1]}")
        elif stalled and stalled.get("status") == "False":
            out.update(status="failed", reason=f"{stalled.get('reason')}: {stalled.get('message', '')}")
        else:
            out["status"] = "stopped" if desired == 0 else "running" if done else "starting"
        with contextlib.suppress(TargetError):
            out["events"] = call(cluster, "list events", lambda: recent_events(cluster, name, events))
        return out

    def logs(self, record: Record, lines: int = 200) -> str:
        """The log of every pod of this version, each under a ``==> pod NAME <==`` header."""
        cluster = self._cluster(record)
        pods = call(cluster, "list pods", lambda: self._pods(cluster, record))
        if not pods:
            return f"(no pods of '{record.name}' v{record.version} in {cluster.context}/{cluster.namespace})"
        parts = []
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            try:
                text = cluster.pod_log(pod_name, lines)
            except Exception as exc:  # one pod's log must not hide the others'
                text = f"(log unavailable: {describe_error(exc)})"
            parts.append(f"==> pod {pod_name} <==\n{text}")
        return "\n\n".join(parts)

    def stop(self, record: Record) -> None:
        """Delete this version's objects; those a newer version has taken over (same names) stay."""
        rec = recorded(record)
        if not rec.get("objects"):
            return  # never applied
        cluster = self._cluster(record)
        name = record.name
        dep = call(cluster, f"read Deployment/{name}", lambda: cluster.get("apps/v1", "Deployment", name))
        owner = ((dep or {}).get("metadata") or {}).get("labels", {}).get("nbdeploy.io/version")
        if dep is not None and owner not in (None, str(record.version)):
            return
        for ref in reversed(rec["objects"]):
            kind, _, name = ref.partition("/")
            call(cluster, f"delete {ref}", lambda k=kind, n=name: cluster.delete(_API_VERSIONS[k], k, n))

    # -- extras --------------------------------------------------------------------------------------------------

    def scale(self, record: Record, n: int) -> dict[str, Any]:
        """Run ``n`` replicas; return the record's new ``kubernetes`` info.

        Without an HPA the Deployment's ``replicas`` becomes ``n``. With one, the HPA's ``minReplicas`` becomes
        ``n`` (and ``maxReplicas`` at least ``n``): the HPA owns the replica count, and a count written on the
        Deployment would be undone by it within seconds. The whole rendered set is re-applied, so server-side
        apply keeps nbdeploy the owner of every field; the rollout is not waited for (``status()`` shows it).
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise TargetError(f"replicas must be a positive integer, got {n!r}", hint="dep.stop() stops it")
        rec = recorded(record)
        if not rec.get("image"):
            raise TargetError(f"'{record.name}' v{record.version} was never applied to a cluster")
        cluster = self._cluster(record)
        hpa: bool | dict[str, int] = False
        if rec.get("hpa"):
            hpa = {**rec["hpa"], "min_replicas": n, "max_replicas": max(int(rec["hpa"]["max_replicas"]), n)}
        docs = self._render(record, rec["image"], cluster, n, hpa)
        for doc in docs:
            call(cluster, f"apply {_kref(doc)}", lambda d=doc: cluster.apply(d))
        return {**rec, "replicas": n, "hpa": scaling(docs), "objects": [_kref(d) for d in docs]}

    # -- steps ---------------------------------------------------------------------------------------------------

    def _publish(self, record: Record) -> tuple[str, str, dict[str, Any]]:
        """The image by digest: the one recorded (restart, rollback), else the container target's build, pushed."""
        rec = recorded(record)
        if rec.get("image") and rec.get("digest"):
            return str(rec["image"]), str(rec["digest"]), {}
        if not self._registry:
            raise TargetError("the kubernetes target needs registry=", hint="where the cluster pulls images from")
        engine = self._images.engine_for(record)
        built = self._images.image(engine, record)  # the container target's build, reused if it exists
        dest = f"{self._registry}/{built['image']}"
        t0 = time.perf_counter()
        digest = engine.push(built["image_id"], dest)
        push_s = round(time.perf_counter() - t0, 1)
        return by_digest(dest, digest), digest, {"container": {"engine": engine.name, **built}, "push_s": push_s}

    def _render(
        self, record: Record, image: str, cluster: Cluster, replicas: int, hpa: bool | dict[str, int]
    ) -> list[dict[str, Any]]:
        hashes = keys.read_hashes(record.name) if record.info.auth else None
        return render(record, image, replicas=replicas, hpa=hpa, namespace=cluster.namespace, key_hashes=hashes)

    def _snapshot(self, cluster: Cluster, docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The objects that exist before the apply (a previous version's), to put back if this one fails."""
        found = {}
        for doc in docs:
            obj = call(cluster, f"read {_kref(doc)}", lambda d=doc: cluster.get(d["apiVersion"], d["kind"], name_of(d)))
            if obj is not None:
                found[_kref(doc)] = obj
        return found

    def _undo(self, cluster: Cluster, docs: list[dict[str, Any]], before: dict[str, dict[str, Any]]) -> None:
        """Delete what this deploy created; re-apply what it changed as it was. Best effort: the first error
        is the one the caller sees."""
        for doc in reversed(docs):
            ref = _kref(doc)
            try:
                if ref in before:
                    cluster.apply(as_applied(before[ref], doc))
                else:
                    cluster.delete(doc["apiVersion"], doc["kind"], name_of(doc))
            except Exception:  # keep undoing the rest
                continue

    def _pods(self, cluster: Cluster, record: Record) -> list[dict[str, Any]]:
        """This version's pods (the selector spans versions; the version label tells them apart)."""
        sel = {"app.kubernetes.io/name": record.name, "app.kubernetes.io/managed-by": MANAGER}
        sel["nbdeploy.io/version"] = str(record.version)
        return sorted(cluster.list("v1", "Pod", sel), key=lambda p: p["metadata"]["name"])

    def _wait(self, cluster: Cluster, record: Record, docs: list[dict[str, Any]]) -> None:
        """Until the Deployment has rolled out (as ``kubectl rollout status``), a pod cannot run, or the deadline."""
        name = name_of(next(d for d in docs if d["kind"] == "Deployment"))
        at_least = (scaling(docs) or {}).get("min_replicas", 0)  # the HPA raises replicas to its minimum
        end = time.monotonic() + self._timeout
        while True:
            dep = call(cluster, f"read Deployment/{name}", lambda: cluster.get("apps/v1", "Deployment", name))
            if dep is None:
                raise TargetError(f"Deployment/{name} disappeared from {cluster.namespace} during the rollout")
            done, desired, counts = rollout(dep, at_least)
            if done:
                return
            pods = call(cluster, "list pods", lambda: self._pods(cluster, record))
            failure: tuple[str | None, str, str] | None = next((f for f in map(pod_failure, pods) if f), None)
            progressing = condition(dep, "Progressing") or {}
            if failure is None and progressing.get("status") == "False":
                failure = (pods[0]["metadata"]["name"] if pods else None, str(progressing.get("reason")), "")
            if failure is None and time.monotonic() > end:
                waiting = next((p for p in pods if not pod_summary(p)["ready"]), pods[0] if pods else None)
                summary = pod_summary(waiting) if waiting else {}
                why = f"not ready after {self._timeout:.0f} s ({counts['ready']}/{desired} ready)"
                failure = (summary.get("name"), why, str(summary.get("reason") or ""))
            if failure is not None:
                raise self._failed(cluster, record, pods, *failure)
            time.sleep(self.poll_s)

    def _failed(
        self, cluster: Cluster, record: Record, pods: list[dict[str, Any]], pod: str | None, reason: str, message: str
    ) -> TargetError:
        what = f"'{record.name}' v{record.version} did not roll out on {cluster.context}/{cluster.namespace}"
        if pod is None:
            hint = f"kubectl --context {cluster.context} -n {cluster.namespace} describe deployment {record.name}"
            return TargetError(f"{what}: {reason} (no pod was created)", hint=hint)
        log = ""
        previous = reason == "CrashLoopBackOff"  # the crashed run's log, not the waiting one's
        for prev in (True, False) if previous else (False,):
            with contextlib.suppress(Exception):
                log = cluster.pod_log(pod, LOG_LINES, previous=prev)
            if log:
                break
        detail = f" ({message})" if message else ""
        return TargetError(
            f"{what}: pod {pod} is {reason}{detail}; what was applied is undone",
            hint=f"last lines of pod {pod}'s log:\n{log or '(empty)'}",
        )
