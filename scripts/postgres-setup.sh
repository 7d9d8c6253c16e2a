#!/usr/bin/env bash
# Install Debian's PostgreSQL server for the batch-scoring tests: tests/pg.py starts a private cluster in a temporary
# folder from its binaries (initdb, postgres under /usr/lib/postgresql/N/bin) and stops it by PID. Idempotent, and
# quiet when it is installed. Debian's package makes and may start a "main" cluster of its own: the tests do not use
# it, so one this install started is stopped again (nothing is left listening on 5432).
set -euo pipefail
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    command -v initdb >/dev/null 2>&1 && exit 0
    echo "postgres-setup: no PostgreSQL server binaries (initdb, postgres): install PostgreSQL, or point" \
        "NBDEPLOY_PG_BIN at its bin folder" >&2
    exit 1
fi
bash "$(dirname "$0")/apt-ensure.sh" postgres-setup postgresql
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header | awk '$4 == "online" {print $1, $2}' | while read -r version cluster; do
        pg_ctlcluster "$version" "$cluster" stop || true
    done
fi
