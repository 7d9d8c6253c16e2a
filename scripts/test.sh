#!/usr/bin/env bash
# Set up, lint, and run the whole test suite (real servers, real notebooks). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check nbdeploy tests examples
.venv/bin/ruff format --check nbdeploy tests examples
mkdir -p test-artifacts
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
