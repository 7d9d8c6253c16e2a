#!/usr/bin/env bash
# Install Chromium for the real-browser widget test (tests/test_monitor_browser.py) from Debian's package:
# Playwright's own browser download (`playwright install`) does not work on these machines, so the test
# launches /usr/bin/chromium. Idempotent, and quiet when it is installed.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser-setup: no $CHROMIUM; install Chromium there (or link it) to run the browser test" >&2
    exit 1
fi
exec bash "$(dirname "$0")/apt-ensure.sh" browser-setup chromium
