"""The Kubernetes target: the container image, pushed to a registry, run by a Deployment on a cluster.

So far this package writes the manifests (``manifests.render``, ``nbdeploy.manifests``) for a GitOps repository
or ``kubectl apply``; applying them and waiting for the rollout is to come.
"""

from __future__ import annotations

from .manifests import by_digest, render, to_yaml

__all__ = ["by_digest", "render", "to_yaml"]
