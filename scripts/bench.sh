#!/usr/bin/env bash
# Runs every benchmark in benchmarks/ once and prints its figures (ratios measured in one run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh
for bench in benchmarks/bench_*.py; do
  echo "== $bench"
  .venv/bin/python "$bench"
done
