"""The keep-alive maintenance DAG: dag.test() against the fake (one idle connection gets used, a fresh one
is left alone), plus its age logic and connection discovery."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.maintenance.keep_alive import (
    exactonline_conn_ids,
    idle_days_threshold,
    keep_alive_dag,
    needs_keep_alive,
)
from airflow_provider_exactonline.testing import FakeExactOnline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import airflow_db

DAY = 86_400.0
REPO = Path(__file__).resolve().parents[2]


def test_age_logic() -> None:
    now = 1_800_000_000.0
    assert not needs_keep_alive(None, 20, now)
    assert not needs_keep_alive(now - 19.9 * DAY, 20, now)
    assert needs_keep_alive(now - 20 * DAY, 20, now)
    assert idle_days_threshold({}) == 20 and idle_days_threshold({"keep_alive_after_days": "10"}) == 10
    with pytest.raises(ExactOnlineConfigError, match="keep_alive_after_days"):
        idle_days_threshold({"keep_alive_after_days": 31})


def test_discovers_exactonline_connections_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_EO_KEEPALIVE_A", json.dumps({"conn_type": "exactonline", "host": "x"}))
    monkeypatch.setenv("AIRFLOW_CONN_PG_KEEPALIVE_B", "postgres://u@h/db")
    found = exactonline_conn_ids()
    assert "eo_keepalive_a" in found and "pg_keepalive_b" not in found


def _example_dag() -> Any:
    """example_dags/exactonline_keep_alive.py (in the DAGs folder, so dag.test() can serialize it)."""
    spec = importlib.util.spec_from_file_location(
        "example_keep_alive", REPO / "example_dags" / "exactonline_keep_alive.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.dag.dag_id == "exactonline_keep_alive"
    return module.dag


def test_dag_factory_takes_explicit_connections() -> None:
    dag = keep_alive_dag("exactonline_keep_alive_custom", conn_ids=["a"], schedule="@weekly")
    assert dag.dag_id == "exactonline_keep_alive_custom" and {t.task_id for t in dag.tasks} == {
        "connections",
        "use_if_idle",
    }


class _ShiftedClock:
    """The fake's clock: real time plus ``offset``, so tokens can be issued "21 days ago"."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


def _connect(fake: FakeExactOnline, clock: _ShiftedClock, conn_id: str, age_days: float) -> str:
    key = f"AIRFLOW_CONN_{conn_id.upper()}"
    clock.offset = -age_days * DAY
    value = json.loads(airflow_db.connection_json(fake))
    clock.offset = 0.0
    obtained = time.time() - age_days * DAY
    value["extra"].update(token_obtained_at=obtained, token_expires_at=obtained + 600)
    os.environ[key] = json.dumps(value)
    return key


def test_keep_alive_dag_uses_only_the_idle_connection() -> None:
    airflow_db.migrate()
    airflow_db.forget_exactonline_variables()
    clock = _ShiftedClock()
    with FakeExactOnline(clock=clock) as fake:
        # One fake user: issuing a pair retires the previous one, so the idle connection (used) comes last.
        keys = [_connect(fake, clock, "eo_keepalive_fresh", 2), _connect(fake, clock, "eo_keepalive_idle", 21)]
        try:
            run = _example_dag().test()  # finds both connections by their type
            assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
            refreshes = [c for c in fake.token_calls if c.grant_type == "refresh_token"]
            assert len(refreshes) == 1 and refreshes[0].outcome == "ok"  # the idle pair only, rotated
            assert fake.count_requests("current/Me") == 1
            stored = airflow_db.get_variable("exactonline_token__eo_keepalive_idle")
            assert stored is not None  # the new pair, written by the worker path (Task SDK -> Variable)
            assert airflow_db.get_variable("exactonline_token__eo_keepalive_fresh") is None
        finally:
            for key in keys:
                os.environ.pop(key, None)
            airflow_db.forget_exactonline_variables()
