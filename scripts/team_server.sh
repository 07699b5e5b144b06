#!/usr/bin/env bash
# A team's MLflow tracking server (docs/scaling.md): MLflow's basic-auth app, artifacts proxied through the
# server into a folder on its machine (workers need no shared disk), and no password in any argument.
#
#   export MLFLOW_FLASK_SERVER_SECRET_KEY=$(openssl rand -hex 32)  # keep it across restarts (CSRF tokens, sessions)
#   export MLFLOW_AUTH_ADMIN_PASSWORD='<12 or more characters>'    # read on the first start only: creates `admin`
#   export PGPASSWORD='<database password>'                          # or a line in ~/.pgpass (chmod 600)
#   bash scripts/team_server.sh --backend postgresql+psycopg2://mlflow@db-host/mlflow --artifacts /srv/mlartifacts
#
# Options (each also as an environment variable):
#   --backend URL    TC_BACKEND      the tracking store; an SQLAlchemy URL without a password (required)
#   --auth-db URL    TC_AUTH_DB      users and permissions (default: the same database; MLflow keeps its own tables)
#   --artifacts DIR  TC_ARTIFACTS    where the server stores artifacts (required)
#   --host HOST      TC_HOST         default 127.0.0.1: other machines reach it through a TLS reverse proxy
#   --port PORT      TC_PORT         default 5000
#   --workers N      TC_WORKERS      default 2
#   --config-dir DIR TC_SERVER_DIR   where the generated auth config goes (default ~/.config/tc-server, mode 700)
# Anything after `--` goes to `mlflow server` as is (e.g. `-- --allowed-hosts mlflow.example.org`).
# Users' default permission is READ: an admin grants EDIT per experiment (docs/scaling.md). MLflow's job runner
# (GenAI jobs, which tc does not use) is off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says otherwise.
# PostgreSQL URLs name the driver (postgresql+psycopg2://): SQLAlchemy's default for postgresql:// is psycopg 3.
set -euo pipefail

backend=${TC_BACKEND:-} auth_db=${TC_AUTH_DB:-} artifacts=${TC_ARTIFACTS:-}
host=${TC_HOST:-127.0.0.1} port=${TC_PORT:-5000} workers=${TC_WORKERS:-2}
config_dir=${TC_SERVER_DIR:-$HOME/.config/tc-server}
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend=$2; shift 2 ;;
    --auth-db) auth_db=$2; shift 2 ;;
    --artifacts) artifacts=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --config-dir) config_dir=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "team_server: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
die() { echo "team_server: $*" >&2; exit 2; }
[ -n "$backend" ] || die "--backend URL is required (the tracking store, e.g. postgresql+psycopg2://mlflow@db-host/mlflow)"
[ -n "$artifacts" ] || die "--artifacts DIR is required (where the server keeps runs' artifacts)"
auth_db=${auth_db:-$backend}
# A password in a URL lands in `ps`, shell history and logs: PostgreSQL reads PGPASSWORD or ~/.pgpass instead.
for url in "$backend" "$auth_db"; do
  # user:password@ (a raw "/" or "@" in the password included, as SQLAlchemy takes it), or a password= setting
  if [[ "$url" =~ ://[^/@:]*:[^[:space:]]*@ || "$url" =~ [Pp][Aa][Ss][Ss][Ww][Oo]?[Rr]?[Dd]= ]]; then
    die "a database URL carries a password; drop it from the URL and set PGPASSWORD or a ~/.pgpass line"
  fi
done
[ -n "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ] ||
  die "set MLFLOW_FLASK_SERVER_SECRET_KEY (e.g. \$(openssl rand -hex 32)) and keep it for restarts"

# The auth config holds no secret (the admin's password comes from MLFLOW_AUTH_ADMIN_PASSWORD, read by MLflow on
# the first start only), but it decides who may do what: only this user may change it.
umask 077
mkdir -p "$config_dir"
config="$config_dir/basic_auth.ini"
cat >"$config" <<EOF
[mlflow]
default_permission = READ
database_uri = $auth_db
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
export MLFLOW_AUTH_CONFIG_PATH="$config"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
mkdir -p "$artifacts"
exec "${PYTHON:-python}" -m mlflow server --app-name basic-auth \
  --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
  --host "$host" --port "$port" --workers "$workers" "${extra[@]}"
