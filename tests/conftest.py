"""Shared test set-up: a private AIRFLOW_HOME per test session, set before Airflow is imported.

Fixtures that need more (a migrated metadata DB, PostgreSQL, worker processes) live in the
conftest of the test folder that needs them, or in ``tests/airflow_env.py`` helpers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

_home = Path(tempfile.mkdtemp(prefix="exactonline-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home / 'airflow.db'}"
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "example_dags"))
# Never let a developer's real connections or variables leak into tests.
for key in list(os.environ):
    if key.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_")):
        del os.environ[key]
