#!/usr/bin/env bash
# Install Debian's Prometheus for promtool, which tests/test_alert_promrules.py runs on the generated alerting rules
# (`promtool check rules`, `promtool test rules`). Idempotent, and quiet when it is installed. Debian's package (and
# the node exporter it recommends) may start servers of their own on 9090 and 9100: the tests do not use them, so
# ones this install started are stopped again (nothing is left listening).
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "prometheus-setup: no promtool: install Prometheus (its release archive ships promtool) and put it on PATH" >&2
    exit 1
fi
bash "$(dirname "$0")/apt-ensure.sh" prometheus-setup prometheus
if command -v systemctl >/dev/null 2>&1; then
    for unit in prometheus prometheus-node-exporter; do
        systemctl is-active --quiet "$unit" 2>/dev/null && { systemctl stop "$unit" || true; }
    done
fi
exit 0
