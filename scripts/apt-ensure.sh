#!/usr/bin/env bash
# apt-ensure.sh LABEL PACKAGE...: install the Debian packages that are missing, quietly; nothing when all are there.
# Shared by the setup scripts. Without root it names the command to run instead, and fails.
set -euo pipefail
label=$1
shift
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "$label: missing ${missing[*]}; as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "$label: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
