#!/usr/bin/env bash
# The main job, with no Exact Online account: a fake Exact Online server, a SQLite Airflow metadata DB
# and a SQLite target database. Installs what it needs, then runs the SQL mirror example DAG twice (a full
# mirror, then an incremental run after a create, an update, a delete and a delete + re-create) and prints
# per table the rows in the database vs the rows in the fake; exits 1 if they differ.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=sqlite source scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
