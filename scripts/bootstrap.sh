#!/usr/bin/env bash
# Creates .venv (if needed) and installs the package with everything the tests and demo need.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again (it only installs what is missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-test}"

if ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
  echo "== installing uv (fast pip replacement) for $PYTHON"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check uv
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m uv venv --quiet --python "$PYTHON" "$VENV"
fi
echo "== installing airflow-provider-exactonline[$EXTRAS] into $VENV"
constraints=()
[ -f requirements/constraints.txt ] && constraints=(--constraint requirements/constraints.txt)
# --compile-bytecode: this machine sets PYTHONDONTWRITEBYTECODE=1, so without .pyc files every new Python
# process (each Airflow component and task the tests start) would compile Airflow's sources again (~2 s each).
"$PYTHON" -m uv pip install --quiet --compile-bytecode --python "$VENV/bin/python" "${constraints[@]}" -e ".[$EXTRAS]"
