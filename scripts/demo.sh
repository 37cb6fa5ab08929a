#!/usr/bin/env bash
# The main job, with no Exact Online account: a fake Exact Online server, a SQLite Airflow metadata DB
# and local files. Installs what it needs, then runs the hourly incremental-sync example DAG twice
# (a full load, then an incremental run after a create, an update and a delete) and prints what it wrote.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=parquet source scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
