"""The cluster's API through the official ``kubernetes`` client: get, list, server-side apply, delete, pod logs.

Every call has a timeout, and a refusal or an unreachable API server becomes a ``TargetError`` that names the
context and namespace, so the target above deals in objects, not in client exceptions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import config
from ...errors import TargetError
from .manifests import CONTAINER, MANAGER

REQUEST_TIMEOUT_S = 30.0
_INSTALL_HINT = "pip install 'nbdeploy[kubernetes]' (the official kubernetes client)"


@dataclass
class Cluster:
    """A connection to one cluster: the dynamic client, the context's name and the namespace used."""

    client: Any  # kubernetes.dynamic.DynamicClient
    context: str
    namespace: str

    def resource(self, api_version: str, kind: str) -> Any:
        return self.client.resources.get(api_version=api_version, kind=kind)

    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        """The object as the server has it, or None."""
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            resp = self.client.get(
                self.resource(api_version, kind), name=name, namespace=self.namespace, serialize=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )  # fmt: skip
        except NotFoundError:
            return None
        return json.loads(resp.data)  # type: ignore[no-any-return]

    def list(self, api_version: str, kind: str, selector: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Objects of ``kind`` in the namespace carrying ``selector``'s labels (also checked here, client-side)."""
        sel = ",".join(f"{k}={v}" for k, v in (selector or {}).items()) or None
        resp = self.client.get(
            self.resource(api_version, kind), namespace=self.namespace, label_selector=sel, serialize=False,
            _request_timeout=REQUEST_TIMEOUT_S,
        )  # fmt: skip
        items = json.loads(resp.data).get("items") or []
        want = (selector or {}).items()
        return [i for i in items if want <= ((i.get("metadata") or {}).get("labels") or {}).items()]

    def apply(self, doc: dict[str, Any]) -> None:
        """Server-side apply, field manager nbdeploy, forced: nbdeploy owns every field it renders."""
        self.client.server_side_apply(
            self.resource(doc["apiVersion"], doc["kind"]), body=doc, namespace=self.namespace,
            field_manager=MANAGER, force_conflicts=True, _request_timeout=REQUEST_TIMEOUT_S,
        )  # fmt: skip

    def delete(self, api_version: str, kind: str, name: str) -> None:
        """Delete, with the pods of a Deployment collected in the background; gone already is fine."""
        from kubernetes.dynamic.exceptions import NotFoundError

        with contextlib.suppress(NotFoundError):
            self.client.delete(
                self.resource(api_version, kind), name=name, namespace=self.namespace,
                propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT_S,
            )  # fmt: skip

    def pod_log(self, pod: str, lines: int, previous: bool = False) -> str:
        """The last ``lines`` of the service container's log (``previous``: of the run before a restart)."""
        query: list[tuple[str, Any]] = [("container", CONTAINER), ("tailLines", lines)]
        if previous:
            query.append(("previous", "true"))
        resp = self.client.request(
            "get", f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log", query_params=query, serialize=False,
            _request_timeout=REQUEST_TIMEOUT_S,
        )  # fmt: skip
        return resp.data.decode("utf-8", errors="replace").rstrip("\n")  # type: ignore[no-any-return]


def connect(context: str | None = None, namespace: str | None = None) -> Cluster:
    """The cluster of ``context`` (default: the kubeconfig's current one), or in-cluster credentials in a pod."""
    try:
        from kubernetes import config as kube_config
        from kubernetes import dynamic
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise TargetError("the kubernetes target needs the kubernetes package", hint=_INSTALL_HINT) from None
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")  # read now, not at import
    try:
        contexts, active = kube_config.list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError) as exc:
        if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return _in_cluster(namespace)
        raise TargetError(
            f"no usable kubeconfig ({path}): {exc}",
            hint="set KUBECONFIG or write ~/.kube/config (e.g. `kubectl config view --raw`), then pass context=",
        ) from None
    names = [c["name"] for c in contexts]
    chosen = context or (active or {}).get("name")
    if chosen not in names:
        raise TargetError(
            f"kube context '{chosen}' is not in {path}" if chosen else f"{path} has no current context",
            hint=f"pass context= one of: {', '.join(names) or '(none)'}",
        )
    ctx = next(c for c in contexts if c["name"] == chosen)
    ns = namespace or (ctx.get("context") or {}).get("namespace") or "default"
    try:
        api = kube_config.new_client_from_config(config_file=path, context=chosen, persist_config=False)
    except (ConfigException, OSError) as exc:
        raise TargetError(f"cannot load kube context '{chosen}': {exc}") from None
    return Cluster(_dynamic(dynamic, api), str(chosen), ns)


def _in_cluster(namespace: str | None) -> Cluster:
    from kubernetes import client, dynamic
    from kubernetes import config as kube_config

    conf = client.Configuration()
    kube_config.load_incluster_config(client_configuration=conf)
    ns_file = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    ns = namespace or (Path(ns_file).read_text().strip() if os.path.exists(ns_file) else "default")
    return Cluster(_dynamic(dynamic, client.ApiClient(conf)), "in-cluster", ns)


def _dynamic(dynamic: Any, api: Any) -> Any:
    """A DynamicClient whose discovery cache lives in NBDEPLOY_HOME (one file per API server), not in /tmp."""
    folder = config.home() / "kube"
    folder.mkdir(exist_ok=True)
    server = hashlib.sha256(api.configuration.host.encode()).hexdigest()[:16]
    return dynamic.DynamicClient(api, cache_file=str(folder / f"discovery-{server}.json"))


def describe_error(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    summary = getattr(exc, "summary", None)
    text = summary() if callable(summary) else str(exc)
    return f"HTTP {status}: {text}" if status else text.splitlines()[0] if text else type(exc).__name__


def call(cluster: Cluster, what: str, fn: Any) -> Any:
    """Run one API call; a refusal or an unreachable server becomes a TargetError naming the context."""
    try:
        return fn()
    except TargetError:
        raise
    except Exception as exc:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError
        from urllib3.exceptions import HTTPError

        if not isinstance(exc, ApiException | DynamicApiError | HTTPError | OSError):
            raise
        hint = "check `kubectl --context {0} -n {1} auth can-i patch deployments` and that the server is reachable"
        raise TargetError(
            f"could not {what} on {cluster.context}/{cluster.namespace}: {describe_error(exc)}",
            hint=hint.format(cluster.context, cluster.namespace),
        ) from None
