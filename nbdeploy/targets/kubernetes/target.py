"""The Kubernetes target: the container target's image, pushed to a registry, applied to a cluster and waited for.

``deploy`` builds the image with the container target (the same build, reused when the engine has it), pushes it
to ``registry`` and renders the manifests (``manifests.render``) with the image by digest, so every pod runs the
bytes that were built. Each object is applied with server-side apply (field manager ``nbdeploy``, forced: nbdeploy
owns what it renders), through the official ``kubernetes`` client, to the current kube context or ``context=``.
The rollout is waited for as ``kubectl rollout status`` does; a pod that cannot run (image pull, crash loop,
unschedulable) or the deadline fails the deploy with the pod, the reason and its last log lines, and what was applied
is undone: deleted, or, when a previous version owned these objects, put back as it was.

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
from ...registry import Record
from ..base import Running
from ..container import ContainerTarget
from .cluster import Cluster, call, connect, describe_error
from .manifests import DEFAULT_REPLICAS, MANAGER, SERVICE_PORT_EXTERNAL, by_digest, render

ROLLOUT_DEADLINE_S = 300.0  # a first pull of a ~600 MB image plus the startup probe's 120 s
POLL_S = 1.0
LOG_LINES = 20
#: Container waiting reasons that do not fix themselves: the deploy fails at once instead of at the deadline.
FAILING = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
_SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")


def recorded(record: Record) -> dict[str, Any]:
    return dict(record.info.get("kubernetes") or {})


def _kref(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


_API_VERSIONS = {
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}


class KubernetesTarget:
    """Run a version on a Kubernetes cluster; ``registry`` is where the cluster pulls images from.

    ``replicas`` (default 2) is the HPA's minimum (it scales to 3x at 70 % CPU) or, with ``hpa=False``, the
    fixed count. ``context``/``namespace`` default to the kubeconfig's current context and its namespace.
    ``engine`` and ``base_image`` are the container target's, for the image build and the push.
    """

    name = "kubernetes"

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
        self._container = ContainerTarget(engine=engine, base_image=base_image)
        self.poll_s = POLL_S

    # -- before the bento is built -------------------------------------------------------------------------------

    def prepare(self) -> dict[str, Any]:
        """Check the registry option, the kube context and the API server, then the container engine and base
        image, all before anything is built; return the bento's image options (the container target's)."""
        if not self._registry:
            raise TargetError(
                "the kubernetes target needs registry=",
                hint='a registry the cluster pulls from, e.g. registry="registry.example.com/ml" '
                "(log in first: `podman login registry.example.com`)",
            )
        cluster = connect(self._context, self._namespace)
        call(cluster, "reach the API server", lambda: cluster.client.request("get", "/version", serialize=False))
        return self._container.prepare()

    # -- the Target protocol -------------------------------------------------------------------------------------

    def _cluster(self, record: Record) -> Cluster:
        rec = recorded(record)
        return connect(self._context or rec.get("context"), self._namespace or rec.get("namespace"))

    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running:
        if port is not None:
            raise TargetError("port= is not for the kubernetes target", hint="the Service listens on port 80")
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
            "hpa": _scaling(docs),
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
        done, desired, counts = _rollout(dep)
        pods = call(cluster, "list pods", lambda: self._pods(cluster, record))
        out.update(desired=desired, **counts, pods=[_pod_summary(p) for p in pods])
        failure = next((f for f in map(_pod_failure, pods) if f), None)
        stalled = _condition(dep, "Progressing")
        if labels.get("nbdeploy.io/version") not in (None, str(record.version)):
            out.update(status="stopped", reason=f"version {labels['nbdeploy.io/version']} now owns Deployment/{name}")
        elif failure:
            out.update(status="failed", reason=f"pod {failure[0]}: {failure[1]}")
        elif stalled and stalled.get("status") == "False":
            out.update(status="failed", reason=f"{stalled.get('reason')}: {stalled.get('message', '')}")
        else:
            out["status"] = "stopped" if desired == 0 else "running" if done else "starting"
        with contextlib.suppress(TargetError):
            out["events"] = call(cluster, "list events", lambda: _events(cluster, name, events))
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
        return {**rec, "replicas": n, "hpa": _scaling(docs), "objects": [_kref(d) for d in docs]}

    # -- steps ---------------------------------------------------------------------------------------------------

    def _publish(self, record: Record) -> tuple[str, str, dict[str, Any]]:
        """The image by digest: the one recorded (restart, rollback), else the container target's build, pushed."""
        rec = recorded(record)
        if rec.get("image") and rec.get("digest"):
            return str(rec["image"]), str(rec["digest"]), {}
        if not self._registry:
            raise TargetError("the kubernetes target needs registry=", hint="where the cluster pulls images from")
        engine = self._container._engine_for(record)
        built = self._container._image(engine, record)  # the container target's build, reused if it exists
        dest = f"{self._registry}/{built['image']}"
        t0 = time.perf_counter()
        digest = engine.push(built["image_id"], dest)
        push_s = round(time.perf_counter() - t0, 1)
        return by_digest(dest, digest), digest, {"container": {"engine": engine.name, **built}, "push_s": push_s}

    def _render(
        self, record: Record, image: str, cluster: Cluster, replicas: int, hpa: bool | dict[str, int]
    ) -> list[dict[str, Any]]:
        hashes = keys.read_hashes(record.name) if record.info.get("auth", True) else None
        return render(record, image, replicas=replicas, hpa=hpa, namespace=cluster.namespace, key_hashes=hashes)

    def _snapshot(self, cluster: Cluster, docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The objects that exist before the apply (a previous version's), to put back if this one fails."""
        found = {}
        for doc in docs:
            obj = call(cluster, f"read {_kref(doc)}", lambda d=doc: cluster.get(d["apiVersion"], d["kind"], _name(d)))
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
                    cluster.apply(_as_applied(before[ref], doc))
                else:
                    cluster.delete(doc["apiVersion"], doc["kind"], _name(doc))
            except Exception:  # keep undoing the rest
                continue

    def _pods(self, cluster: Cluster, record: Record) -> list[dict[str, Any]]:
        """This version's pods (the selector spans versions; the version label tells them apart)."""
        sel = {"app.kubernetes.io/name": record.name, "app.kubernetes.io/managed-by": MANAGER}
        sel["nbdeploy.io/version"] = str(record.version)
        return sorted(cluster.list("v1", "Pod", sel), key=lambda p: p["metadata"]["name"])

    def _wait(self, cluster: Cluster, record: Record, docs: list[dict[str, Any]]) -> None:
        """Until the Deployment has rolled out (as ``kubectl rollout status``), a pod cannot run, or the deadline."""
        name = _name(next(d for d in docs if d["kind"] == "Deployment"))
        at_least = (_scaling(docs) or {}).get("min_replicas", 0)  # the HPA raises replicas to its minimum
        end = time.monotonic() + self._timeout
        while True:
            dep = call(cluster, f"read Deployment/{name}", lambda: cluster.get("apps/v1", "Deployment", name))
            if dep is None:
                raise TargetError(f"Deployment/{name} disappeared from {cluster.namespace} during the rollout")
            done, desired, counts = _rollout(dep, at_least)
            if done:
                return
            pods = call(cluster, "list pods", lambda: self._pods(cluster, record))
            failure = next((f for f in map(_pod_failure, pods) if f), None)
            progressing = _condition(dep, "Progressing") or {}
            if failure is None and progressing.get("status") == "False":
                failure = (pods[0]["metadata"]["name"] if pods else None, str(progressing.get("reason")), "")
            if failure is None and time.monotonic() > end:
                waiting = next((p for p in pods if not _pod_summary(p)["ready"]), pods[0] if pods else None)
                summary = _pod_summary(waiting) if waiting else {}
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


# -- reading objects ------------------------------------------------------------------------------------------------


def _name(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["name"])


def _as_applied(obj: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """An object read from the server, fit to apply again: no status, no server-owned metadata."""
    out = {k: v for k, v in obj.items() if k != "status"}
    out["apiVersion"], out["kind"] = doc["apiVersion"], doc["kind"]
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    return out


def _scaling(docs: list[dict[str, Any]]) -> dict[str, int] | None:
    hpa = next((d for d in docs if d["kind"] == "HorizontalPodAutoscaler"), None)
    if hpa is None:
        return None
    spec = hpa["spec"]
    cpu = spec["metrics"][0]["resource"]["target"]["averageUtilization"]
    return {"min_replicas": spec["minReplicas"], "max_replicas": spec["maxReplicas"], "cpu_utilization": cpu}


def _rollout(dep: dict[str, Any], at_least: int = 0) -> tuple[bool, int, dict[str, int]]:
    """(rolled out, desired, counts) as ``kubectl rollout status`` judges a Deployment, and at least ``at_least``
    replicas: a new Deployment starts at 1 and its HPA raises it to the minimum a moment later."""
    spec, st, meta = dep.get("spec") or {}, dep.get("status") or {}, dep.get("metadata") or {}
    desired = max(int(spec.get("replicas", 1)), at_least)
    counts = {k: int(st.get(f"{k}Replicas", 0)) for k in ("updated", "ready", "available")}
    counts["total"] = int(st.get("replicas", counts["updated"]))
    observed = int(st.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
    done = observed and counts["total"] <= counts["updated"] and min(counts.values()) >= desired
    return done, desired, counts


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def _pod_failure(pod: dict[str, Any]) -> tuple[str, str, str] | None:
    """(pod, reason, message) if the pod cannot run without someone fixing something, else None."""
    name = pod["metadata"]["name"]
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return name, "Unschedulable", str(scheduled.get("message", ""))
    status = pod.get("status") or {}
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING:
            return name, str(waiting["reason"]), str(waiting.get("message", ""))
    return None


def _pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    reason = next(
        (r for cs in statuses for r in [((cs.get("state") or {}).get("waiting") or {}).get("reason")] if r), None
    )
    ready = _condition(pod, "Ready")
    return {
        "name": pod["metadata"]["name"],
        "phase": status.get("phase"),
        "ready": bool(ready and ready.get("status") == "True"),
        "restarts": sum(int(cs.get("restartCount", 0)) for cs in statuses),
        "reason": reason,
    }


def _events(cluster: Cluster, name: str, n: int) -> list[dict[str, Any]]:
    """The last ``n`` events of the Deployment, its ReplicaSets and pods (their names start with the Deployment's)."""
    items = [e for e in cluster.list("v1", "Event") if str(_involved(e).get("name", "")).startswith(name)]

    def when(e: dict[str, Any]) -> str:
        meta = e.get("metadata") or {}
        return str(e.get("lastTimestamp") or e.get("eventTime") or meta.get("creationTimestamp") or "")

    return [
        {
            "time": when(e),
            "type": e.get("type"),
            "reason": e.get("reason"),
            "object": f"{_involved(e).get('kind')}/{_involved(e).get('name')}",
            "message": e.get("message"),
        }
        for e in sorted(items, key=when)[-n:]
    ]


def _involved(event: dict[str, Any]) -> dict[str, Any]:
    return event.get("involvedObject") or {}
