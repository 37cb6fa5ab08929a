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
"$PYTHON" -m uv pip install --quiet --python "$VENV/bin/python" "${constraints[@]}" -e ".[$EXTRAS]"
