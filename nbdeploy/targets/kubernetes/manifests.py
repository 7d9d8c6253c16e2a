"""Kubernetes manifests for one version of a deployment: Deployment, Service, HPA, PDB and the key-hash Secret.

The pod runs the container target's image hardened: as BentoML's image user (uid 1034), on a read-only root
filesystem, with every capability dropped, no privilege escalation, the RuntimeDefault seccomp profile and no
service-account token. BentoML writes to ``/tmp`` and to ``BENTOML_HOME`` (its Prometheus multiprocess folder):
both are emptyDirs, and ``BENTOML_HOME`` moves out of ``/home/bentoml``, where the bento itself lives.

The Secret holds the sha256 of the API keys only (``keys.json``, as in ``NBDEPLOY_HOME/deployments/NAME``), mounted
as a folder so a rotation reaches running pods without a restart. The request log is written per pod into an
emptyDir (``NBDEPLOY_DATA_DIR``): it lives and dies with its pod, so on a cluster the monitor panel's request view
covers no more than that; scrape ``/metrics`` (the pods carry ``prometheus.io`` annotations) for the service's numbers.

Lineage travels on every object: short hash prefixes in labels (values are capped at 63 characters), the full
sha256 of the artifact and of the requirements, the bento tag and the origin in annotations.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

from ...errors import TargetError
from ...images import BENTO_UID, SERVICE_PORT
from ...package import bento_env
from ...registry import Record
from ..base import service_env

DATA_ROOT = "/var/lib/nbdeploy"  # an emptyDir: NBDEPLOY_DATA_DIR (request log) is DATA_ROOT/vN
KEYS_DIR = "/etc/nbdeploy/keys"  # the Secret, mounted read-only
BENTOML_HOME = "/var/lib/bentoml"  # an emptyDir: BentoML's Prometheus multiprocess folder and scratch
CONTAINER = "service"
PORT_NAME = "http"
SERVICE_PORT_EXTERNAL = 80
MANAGER = "nbdeploy"
DEFAULT_REPLICAS = 2
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"},
}
DEFAULT_CPU_TARGET = 70  # percent of the CPU request, the HPA's target
STARTUP_DEADLINE_S = 120  # as the container target's READY_DEADLINE_S
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # fullmatch: "$" would let a trailing newline through
_HEX64 = re.compile(r"[0-9a-f]{64}")


def by_digest(repository: str, digest: str) -> str:
    """``repository@sha256:...`` (a tag on ``repository`` is dropped: the digest names the image)."""
    digest = digest if digest.startswith("sha256:") else f"sha256:{digest}"
    if not _DIGEST.fullmatch(digest):
        raise TargetError(f"not an image digest: {digest!r}", hint="expected sha256: and 64 hex digits")
    repository = repository.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:  # a tag, not a registry port
        repository = repository[: len(repository) - len(last)] + last.split(":", 1)[0]
    return f"{repository}@{digest}"


def _short(value: str, n: int = 16) -> str:
    return value[:n]


def selector(record: Record) -> dict[str, str]:
    """The labels that pick the pods of a name, across versions (a Deployment's selector cannot change)."""
    return {"app.kubernetes.io/name": record.name, "app.kubernetes.io/managed-by": MANAGER}


def labels(record: Record) -> dict[str, str]:
    """Selector labels plus lineage: version and short hash prefixes (label values are at most 63 characters)."""
    out = {**selector(record), "nbdeploy.io/name": record.name}
    if record.version:
        out["app.kubernetes.io/version"] = f"v{record.version}"
        out["nbdeploy.io/version"] = str(record.version)
    info = record.info
    if info.sha256:
        out["nbdeploy.io/artifact"] = _short(info.sha256)
    reqs = str(info.lineage.get("requirements_sha256") or "")
    if reqs:
        out["nbdeploy.io/requirements"] = _short(reqs)
    return out


def lineage_annotations(record: Record) -> dict[str, str]:
    """The full lineage: artifact and requirements sha256, bento, image id, Python, commit, who and when."""
    info, lin = record.info, record.info.lineage
    out = {
        "nbdeploy.io/artifact-sha256": info.sha256,
        "nbdeploy.io/requirements-sha256": lin.get("requirements_sha256"),
        "nbdeploy.io/bento": record.bento_tag,
        "nbdeploy.io/image-id": (record.state.get("container") or {}).get("image_id"),
        "nbdeploy.io/kind": info.kind,
        "nbdeploy.io/python": lin.get("python"),
        "nbdeploy.io/git-commit": lin.get("git_commit"),
        "nbdeploy.io/git-dirty": None if lin.get("git_commit") is None else str(bool(lin.get("git_dirty"))).lower(),
        "nbdeploy.io/captured-by": f"{lin['user']}@{lin.get('host', '?')}" if lin.get("user") else None,
        "nbdeploy.io/captured-at": lin.get("created_at"),
    }
    return {k: str(v) for k, v in out.items() if v not in (None, "")}


def _names(record: Record) -> dict[str, str]:
    # A Service name must start with a letter (DNS-1035); deployment names may start with a digit.
    service = record.name if record.name[0].isalpha() else ("s" + record.name)[:63].rstrip("-")
    return {"deployment": record.name, "service": service, "secret": f"{record.name}-api-keys"}


def _resources(resources: dict[str, dict[str, str]] | None) -> dict[str, dict[str, str]]:
    if resources is None:
        return copy.deepcopy(DEFAULT_RESOURCES)
    unknown = set(resources) - {"requests", "limits"}
    if unknown:
        raise TargetError(
            f"unknown resources key '{sorted(unknown)[0]}'",
            hint="pass {'requests': {'cpu': '500m', 'memory': '1Gi'}, 'limits': {...}}",
        )
    return {k: {r: str(v) for r, v in resources[k].items()} for k in ("requests", "limits") if resources.get(k)}


def _hpa(hpa: bool | dict[str, int] | None, replicas: int) -> dict[str, int] | None:
    if not hpa:
        return None
    given = dict(hpa) if isinstance(hpa, dict) else {}
    unknown = set(given) - {"min_replicas", "max_replicas", "cpu_utilization"}
    if unknown:
        raise TargetError(
            f"unknown hpa option '{sorted(unknown)[0]}'", hint="hpa takes min_replicas, max_replicas, cpu_utilization"
        )
    low = int(given.get("min_replicas", replicas))
    high = int(given.get("max_replicas", max(3 * low, low + 1)))
    cpu = int(given.get("cpu_utilization", DEFAULT_CPU_TARGET))
    if not 1 <= low <= high or not 1 <= cpu <= 100:
        raise TargetError(f"hpa needs 1 <= min_replicas <= max_replicas and 1 <= cpu_utilization <= 100, got {given}")
    return {"min_replicas": low, "max_replicas": high, "cpu_utilization": cpu}


def _env(record: Record, auth: bool) -> list[dict[str, str]]:
    env = {**bento_env(), **service_env(record, DATA_ROOT), "BENTOML_HOME": BENTOML_HOME}
    if auth:
        env["NBDEPLOY_KEYS_FILE"] = f"{KEYS_DIR}/keys.json"
    else:
        env.pop("NBDEPLOY_KEYS_FILE", None)
    return [{"name": k, "value": v} for k, v in env.items()]


def _secret_data(hashes: list[str]) -> str:
    bad = [h for h in hashes if not isinstance(h, str) or not _HEX64.fullmatch(h)]
    if bad or not hashes:
        raise TargetError(
            "the Secret must hold sha256 hashes of API keys only",
            hint="pass the hashes (nbdeploy.keys.read_hashes(name)), never the keys",
        )
    return base64.b64encode(json.dumps({"sha256": list(hashes)}).encode()).decode()


def render(
    record: Record,
    image: str,
    *,
    replicas: int = DEFAULT_REPLICAS,
    resources: dict[str, dict[str, str]] | None = None,
    hpa: bool | dict[str, int] | None = True,
    namespace: str | None = None,
    key_hashes: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The manifests of ``record`` running ``image``: Secret (if auth), Deployment, Service, HPA (if ``hpa``), PDB.

    ``image`` should name the image by digest (``by_digest``). ``hpa`` is True (``replicas`` to 3x, 70 % CPU),
    False, or ``{"min_replicas", "max_replicas", "cpu_utilization"}``; with an HPA the Deployment leaves
    ``replicas`` to it (both owning the field would fight on every apply). ``key_hashes`` are the sha256 of
    the accepted API keys, required unless the record was deployed with ``auth=False``.
    """
    if not isinstance(replicas, int) or replicas < 1:
        raise TargetError(f"replicas must be a positive integer, got {replicas!r}")
    auth = record.info.auth
    res = _resources(resources)
    scaling = _hpa(hpa, replicas)
    if scaling and "cpu" not in res.get("requests", {}):
        raise TargetError("a CPU autoscaler needs a CPU request", hint="set resources['requests']['cpu'] or hpa=False")
    names, lab, ann, sel = _names(record), labels(record), lineage_annotations(record), selector(record)

    def meta(name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name}
        if namespace:
            out["namespace"] = namespace
        out["labels"] = dict(lab)
        out["annotations"] = dict(ann)
        return out

    probe = {"httpGet": {"path": "/readyz", "port": PORT_NAME}, "timeoutSeconds": 2}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": PORT_NAME, "containerPort": SERVICE_PORT, "protocol": "TCP"}],
        "env": _env(record, auth),
        "resources": res,
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": STARTUP_DEADLINE_S // 2},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": PORT_NAME},
            "timeoutSeconds": 5,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "bentoml-home", "mountPath": BENTOML_HOME},
            {"name": "data", "mountPath": DATA_ROOT},
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "bentoml-home", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    docs: list[dict[str, Any]] = []
    if auth:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(names["secret"]),
            "type": "Opaque",
            "data": {"keys.json": _secret_data(key_hashes or [])},
        }
        docs.append(secret)
        container["volumeMounts"].append({"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True})
        volumes.append({"name": "api-keys", "secret": {"secretName": names["secret"], "defaultMode": 0o440}})
    pod_annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(SERVICE_PORT),
        "prometheus.io/path": "/metrics",
        "prometheus.io/scheme": "http",
        **ann,
    }
    spec: dict[str, Any] = {} if scaling else {"replicas": replicas}
    spec.update(
        revisionHistoryLimit=5,
        progressDeadlineSeconds=600,
        selector={"matchLabels": dict(sel)},
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        template={
            "metadata": {"labels": dict(lab), "annotations": pod_annotations},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": 30,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": BENTO_UID,
                    "runAsGroup": BENTO_UID,
                    "fsGroup": BENTO_UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": dict(sel)},
                    }
                ],
                "containers": [container],
                "volumes": volumes,
            },
        },
    )
    docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(names["deployment"]), "spec": spec})
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(names["service"]),
            "spec": {
                "type": "ClusterIP",
                "selector": dict(sel),
                "ports": [
                    {"name": PORT_NAME, "port": SERVICE_PORT_EXTERNAL, "targetPort": PORT_NAME, "protocol": "TCP"}
                ],
            },
        }
    )
    if scaling:
        docs.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": meta(names["deployment"]),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names["deployment"]},
                    "minReplicas": scaling["min_replicas"],
                    "maxReplicas": scaling["max_replicas"],
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": scaling["cpu_utilization"]},
                            },
                        }
                    ],
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
                },
            }
        )
    docs.append(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(names["deployment"]),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(sel)}},
        }
    )
    return docs


def to_yaml(docs: list[dict[str, Any]], header: str | None = None) -> str:
    """One YAML stream of ``docs``, in order (the Secret before the Deployment that mounts it)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors: reviewers read every field in full
            return True

    comment = "".join(f"# {line}\n" for line in (header or "").splitlines())
    return comment + yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, default_flow_style=False)
