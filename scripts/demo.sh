#!/usr/bin/env bash
# Main job: set up, then deploy an example model to the local target and print a prediction from the endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NBDEPLOY_HOME=${NBDEPLOY_HOME:-$PWD/.nbdeploy}
exec .venv/bin/python examples/deploy_churn.py
