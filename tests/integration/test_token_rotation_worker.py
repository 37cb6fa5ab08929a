"""DONE-WHEN, worker path: 8 mapped tasks run by a real scheduler (LocalExecutor) under the Task SDK
supervisor, talking to a real api-server's Execution API, share one connection for more than 5 token
lifetimes. The ORM is blocked in those task processes (asserted from inside each task), so tokens rotate
through the Variable store and its lease. Not ``dag.test()``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from airflow_provider_exactonline.auth.token_encryption import decrypt_json
from airflow_provider_exactonline.testing import FakeExactOnline

from .rotation_support import (
    Processes,
    assert_rotation_healthy,
    free_port,
    fresh_pg_database,
    prepare_cluster,
    requires_pg,
    rotation_env,
    run_airflow,
    start_cluster,
    summarize,
    wait_for_dag_run,
)

LIFETIME = 15.0
DURATION = 5 * LIFETIME + 8
DAG_ID = "exactonline_token_rotation"


def _task_states(db_url: str) -> dict[str, int]:
    import psycopg2

    dsn = db_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(state, 'none'), count(*) FROM task_instance WHERE dag_id = %s GROUP BY 1", (DAG_ID,)
        )
        return {str(state): int(count) for state, count in cur.fetchall()}


@pytest.mark.integration
@requires_pg
@pytest.mark.timeout(600)
def test_eight_worker_tasks_rotate_through_the_variable_store(tmp_path: Path) -> None:
    conn_id = "exact_rotation"
    port = free_port()
    out = tmp_path / "results"
    out.mkdir()
    with (
        FakeExactOnline(access_token_lifetime=LIFETIME, minutely_limit=None, daily_limit=None) as fake,
        fresh_pg_database() as db_url,
    ):
        env = rotation_env(tmp_path / "home", db_url, port, conn_id, DURATION, out)
        prepare_cluster(env, conn_id, fake)
        procs = Processes(tmp_path)
        try:
            start_cluster(procs, env, port)
            run_airflow(env, "dags", "unpause", DAG_ID)
            started = time.time()
            run_airflow(env, "dags", "trigger", DAG_ID)
            state = wait_for_dag_run(db_url, DAG_ID, procs, DURATION + 240)
            ended = time.time()
            results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
            assert state == "success", f"dag run {state}, tasks {_task_states(db_url)}\n{results}\n{procs.dump(8000)}"
            summary = summarize(results, fake, started, ended, LIFETIME)
            print("\nworker path:", json.dumps(summary, indent=1))
            # Really Airflow 3's worker path: Task SDK process, ORM refused, Variable store chosen.
            assert summary["process_kinds"] == ["task-sdk"], summary
            assert all(o.startswith("blocked: RuntimeError") for o in summary["orm"]), summary
            assert summary["stores"] == ["variable,connection (read-only)"], summary
            assert_rotation_healthy(summary)
            raw = run_airflow(env, "variables", "get", f"exactonline_token__{conn_id}")
            variable = decrypt_json(raw, fake.client_secret, conn_id)  # encrypted at rest
            assert variable["refresh_token"] == fake.current_refresh_token and fake.current_refresh_token not in raw
        except BaseException:
            print(procs.dump(8000))
            raise
        finally:
            procs.stop_all()
