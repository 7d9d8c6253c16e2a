"""Reading the objects the cluster returns: rollout progress, pod failures and summaries, events.

Pure functions over the API's dicts (plus the event listing), so the target above reads as steps.
"""

from __future__ import annotations

from typing import Any

from .cluster import Cluster

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
SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")


def name_of(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["name"])


def as_applied(obj: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """An object read from the server, fit to apply again: no status, no server-owned metadata."""
    out = {k: v for k, v in obj.items() if k != "status"}
    out["apiVersion"], out["kind"] = doc["apiVersion"], doc["kind"]
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_FIELDS}
    return out


def scaling(docs: list[dict[str, Any]]) -> dict[str, int] | None:
    hpa = next((d for d in docs if d["kind"] == "HorizontalPodAutoscaler"), None)
    if hpa is None:
        return None
    spec = hpa["spec"]
    cpu = spec["metrics"][0]["resource"]["target"]["averageUtilization"]
    return {"min_replicas": spec["minReplicas"], "max_replicas": spec["maxReplicas"], "cpu_utilization": cpu}


def rollout(dep: dict[str, Any], at_least: int = 0) -> tuple[bool, int, dict[str, int]]:
    """(rolled out, desired, counts) as ``kubectl rollout status`` judges a Deployment, and at least ``at_least``
    replicas: a new Deployment starts at 1 and its HPA raises it to the minimum a moment later."""
    spec, st, meta = dep.get("spec") or {}, dep.get("status") or {}, dep.get("metadata") or {}
    desired = max(int(spec.get("replicas", 1)), at_least)
    counts = {k: int(st.get(f"{k}Replicas", 0)) for k in ("updated", "ready", "available")}
    counts["total"] = int(st.get("replicas", counts["updated"]))
    observed = int(st.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
    done = observed and counts["total"] <= counts["updated"] and min(counts.values()) >= desired
    return done, desired, counts


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def pod_failure(pod: dict[str, Any]) -> tuple[str, str, str] | None:
    """(pod, reason, message) if the pod cannot run without someone fixing something, else None."""
    name = pod["metadata"]["name"]
    scheduled = condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return name, "Unschedulable", str(scheduled.get("message", ""))
    status = pod.get("status") or {}
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING:
            return name, str(waiting["reason"]), str(waiting.get("message", ""))
    return None


def pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    reason = next(
        (r for cs in statuses for r in [((cs.get("state") or {}).get("waiting") or {}).get("reason")] if r), None
    )
    ready = condition(pod, "Ready")
    return {
        "name": pod["metadata"]["name"],
        "phase": status.get("phase"),
        "ready": bool(ready and ready.get("status") == "True"),
        "restarts": sum(int(cs.get("restartCount", 0)) for cs in statuses),
        "reason": reason,
    }


def recent_events(cluster: Cluster, name: str, n: int) -> list[dict[str, Any]]:
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
