"""Example DAG tests: a migrated metadata DB (once per session) and the fake server behind
``exactonline_default``. The DAGs run with ``dag.test()`` (in-process task runner, triggers inline),
so tokens and watermarks go through the Task SDK into Airflow Variables, as on a worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import airflow_db

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def metadata_db() -> None:
    assert Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).resolve() == (REPO / "example_dags").resolve()
    airflow_db.migrate()


@pytest.fixture
def fake(request: pytest.FixtureRequest, metadata_db: None) -> Iterator[Any]:
    from airflow_provider_exactonline.testing import FakeExactOnline

    kwargs: dict[str, Any] = {
        "rows": {
            "crm/Accounts": 120,
            "crm/Contacts": 40,
            "salesinvoice/SalesInvoices": 30,
            "financialtransaction/TransactionLines": 80,
            "financial/GLAccounts": 25,
        }
    }
    for marker in reversed(list(request.node.iter_markers("fake_exact_online"))):
        kwargs.update(marker.kwargs)
    airflow_db.forget_exactonline_variables()
    with FakeExactOnline(**kwargs) as server:
        key = airflow_db.connect(server, "exactonline_default")
        yield server
        os.environ.pop(key, None)


def load_module(dag_id: str) -> Any:
    """The example DAG file ``example_dags/{dag_id}.py`` as a fresh module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{dag_id}", REPO / "example_dags" / f"{dag_id}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_dag(dag_id: str) -> Any:
    return load_module(dag_id).dag
