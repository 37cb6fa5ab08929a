"""Mirror tests: a fake Exact Online per test, a connection in an env var, tokens in memory (tests/airflow_db.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from airflow_db import conn, fake  # noqa: F401
