#!/usr/bin/env bash
# Install what the container target and its tests need: podman, runc, catatonit (`podman run --init`),
# debootstrap (the local base image) and docker-registry (a local Distribution registry for the Kubernetes target's
# push test). Idempotent, and quiet when everything is installed.
# Engine settings (runc, lower ulimits) are not written to /etc: nbdeploy passes its own CONTAINERS_CONF.
set -euo pipefail
packages=(podman runc catatonit debootstrap docker-registry)
if ! command -v dpkg-query >/dev/null 2>&1; then
    # Not Debian/Ubuntu: check the tools and say what is missing.
    for tool in podman runc debootstrap; do
        command -v "$tool" >/dev/null 2>&1 || { echo "podman-setup: please install $tool" >&2; exit 1; }
    done
    exit 0
fi
exec bash "$(dirname "$0")/apt-ensure.sh" podman-setup "${packages[@]}"
