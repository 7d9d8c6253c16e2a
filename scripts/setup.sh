#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install nbdeploy with its test extras.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=.venv/.nbdeploy-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q -e ".[test]"
    echo "$want" > "$stamp"
else
    # the package is editable; only re-link it in case the clone moved
    .venv/bin/python -m pip install -q --no-deps -e . >/dev/null
fi
