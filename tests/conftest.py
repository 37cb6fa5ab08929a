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

#: The slowest files (real Airflow clusters, the distributed rig, the docs), longest first. They start first,
#: so that with two xdist workers (scripts/test.sh: ``--dist loadfile --no-loadscope-reorder``) the long ones
#: run side by side and the short files fill the gaps, instead of one long file starting last.
SLOW_FILES_FIRST = (
    "tests/distributed/test_celery_workers.py",
    "tests/integration/test_shared_budget_cluster.py",
    "tests/docs/test_snippets.py",
    "tests/integration/test_webhooks_e2e.py",
    "tests/integration/test_token_rotation_worker.py",
    "tests/integration/test_token_rotation_connection_extras.py",
    "tests/integration/test_triggerer_token_rotation.py",
    "tests/integration/test_tokens_encrypted_at_rest.py",
    "tests/browser/test_connect_flow.py",
    "tests/budget/test_redis_limiter.py",
)


def pytest_collection_modifyitems(config: object, items: list) -> None:  # type: ignore[type-arg]
    rank = {path: index for index, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
