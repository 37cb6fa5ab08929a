#!/usr/bin/env bash
# The test command: installs what it needs (venv, package, Chromium for the browser test), then runs
# ruff, mypy and pytest. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k hooks -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh

if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Debian's chromium for the browser end-to-end test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "!! could not install chromium; the browser test will say why it is skipped"
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# Three workers (pytest-xdist), one test file per worker at a time, so a file's module-scoped rig is built once;
# the slowest files start first (tests/conftest.py). Most of the suite waits on real Airflow processes, so two
# workers fit on two cores (load average about 3 during a run). PYTEST_WORKERS=0 runs it in one process.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder "$@"
