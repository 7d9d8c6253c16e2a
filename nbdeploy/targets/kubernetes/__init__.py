"""The Kubernetes target: the container image, pushed to a registry, run by a Deployment on a cluster.

``manifests`` renders the objects (``render``, ``nbdeploy.manifests``) for a GitOps repository or ``kubectl apply``;
``target.KubernetesTarget`` builds and pushes the image, applies them with server-side apply and waits for the rollout.
"""

from __future__ import annotations

from .manifests import by_digest, render, to_yaml

__all__ = ["by_digest", "render", "to_yaml"]
