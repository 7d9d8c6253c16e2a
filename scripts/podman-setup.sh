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
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "podman-setup: missing ${missing[*]}; as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "podman-setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
