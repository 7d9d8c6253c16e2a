#!/usr/bin/env bash
# Set up, lint, and run the whole test suite (real servers, real notebooks). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/podman-setup.sh  # the container target's engine; quiet when installed
bash scripts/browser-setup.sh  # Debian's chromium for the real-browser panel test; quiet when installed
bash scripts/postgres-setup.sh  # Debian's PostgreSQL server for the batch-scoring tests; quiet when installed
bash scripts/prometheus-setup.sh  # Debian's promtool for the alerting-rules tests; quiet when installed
.venv/bin/nbdeploy base-image build --cache-dir .cache  # present: nothing; cached archive: load; else bootstrap
.venv/bin/ruff check nbdeploy tests examples bench scripts notebooks/conftest.py
.venv/bin/ruff format --check nbdeploy tests examples bench scripts notebooks/conftest.py
.venv/bin/lint-imports  # package layers: [tool.importlinter] in pyproject.toml
.venv/bin/mypy nbdeploy  # [tool.mypy] in pyproject.toml names the modules still loosely typed
mkdir -p test-artifacts
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
