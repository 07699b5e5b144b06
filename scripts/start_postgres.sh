#!/usr/bin/env bash
# Install and start a local PostgreSQL (Debian's package) for the multi-worker sweep test, with a role and
# database `tc` (password `tc`) on 127.0.0.1:5432. Prints the SQLAlchemy URL to use as TC_TEST_POSTGRES_URL.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  pg_createcluster "$(ls /usr/lib/postgresql | sort -n | tail -1)" main >/dev/null
fi
pg_lsclusters -h | while read -r ver cluster _; do pg_ctlcluster "$ver" "$cluster" start 2>/dev/null || true; done
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='tc'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE tc LOGIN PASSWORD 'tc'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='tc'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE DATABASE tc OWNER tc\""
echo "postgresql+psycopg2://tc:tc@127.0.0.1:5432/tc"
