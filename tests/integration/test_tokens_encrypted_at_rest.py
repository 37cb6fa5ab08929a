"""Issue 14: after real rotations by real worker processes under DEBUG logging, no token the fake issued
is in the raw Variable row, in any log file under AIRFLOW_HOME, or in any process's stdout/stderr.

A scheduler (LocalExecutor) runs the rotation DAG's 8 mapped tasks under the Task SDK supervisor, whose
DEBUG log prints every Variable write with its value: only the encrypted envelope may appear there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from airflow_provider_exactonline.auth.token_encryption import decrypt_json, is_encrypted
from airflow_provider_exactonline.testing import FakeExactOnline

from .rotation_support import (
    Processes,
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

LIFETIME = 10.0
DURATION = 2 * LIFETIME + 5  # two rotations or more
DAG_ID = "exactonline_token_rotation"


def _query(db_url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    import psycopg2

    with psycopg2.connect(db_url.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def _files_holding(paths: list[Path], secrets: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in paths:
        text = path.read_bytes().decode("utf-8", errors="replace")
        hits = [s[:10] + "..." for s in secrets if s in text]
        if hits:
            found[str(path)] = hits
    return found


@pytest.mark.integration
@requires_pg
@pytest.mark.timeout(600)
def test_rotated_tokens_are_in_no_variable_row_and_no_debug_log(tmp_path: Path) -> None:
    conn_id = "exact_at_rest"
    port = free_port()
    out = tmp_path / "results"
    out.mkdir()
    home = tmp_path / "home"
    airflow_fernet_key = Fernet.generate_key().decode()
    outputs: list[str] = []
    with (
        FakeExactOnline(access_token_lifetime=LIFETIME, minutely_limit=None, daily_limit=None) as fake,
        fresh_pg_database() as db_url,
    ):
        env = rotation_env(
            home,
            db_url,
            port,
            conn_id,
            DURATION,
            out,
            AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG",
            AIRFLOW__CORE__FERNET_KEY=airflow_fernet_key,
        )
        prepare_cluster(env, conn_id, fake)
        procs = Processes(tmp_path)
        try:
            start_cluster(procs, env, port)
            started = time.time()
            outputs.append(run_airflow(env, "dags", "trigger", DAG_ID))
            state = wait_for_dag_run(db_url, DAG_ID, procs, DURATION + 300)
            ended = time.time()
            results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
            assert state == "success", f"dag run {state}\n{results}\n{procs.dump(8000)}"
            summary = summarize(results, fake, started, ended, LIFETIME)
            assert summary["process_kinds"] == ["task-sdk"], summary  # the worker path, not dag.test()
            assert summary["stores"] == ["variable,connection (read-only)"], summary
            assert summary["caller_errors"] == {} and summary["token_outcomes"] == {}, summary
            rotated = [c for c in fake.token_calls if c.grant_type == "refresh_token" and c.outcome == "ok"]
            assert rotated, summary  # real rotations happened in the workers

            issued = {t[k] for t in fake.token_chain for k in ("access_token", "refresh_token")}
            rotated_pairs = fake.token_chain[1:]  # [0] is the seed the connection was created with
            assert len(rotated_pairs) == len(rotated) and issued

            # The raw row: under Airflow's own Fernet layer, then our envelope; no token at either level.
            key = f"exactonline_token__{conn_id}"
            (val, airflow_encrypted), *_ = _query(db_url, "SELECT val, is_encrypted FROM variable WHERE key = %s", key)
            raw = str(val)
            assert not [s for s in issued if s in raw]
            stored = Fernet(airflow_fernet_key.encode()).decrypt(raw.encode()).decode() if airflow_encrypted else raw
            assert is_encrypted(stored) and not [s for s in issued if s in stored], stored[:200]
            assert decrypt_json(stored, fake.client_secret, conn_id)["refresh_token"] == fake.current_refresh_token
            lease_rows = _query(db_url, "SELECT val FROM variable WHERE key = %s", f"exactonline_lease__{conn_id}")
            assert lease_rows and not [s for s in issued if s in str(lease_rows[0][0])]
        except BaseException:
            print(procs.dump(8000))
            raise
        finally:
            procs.stop_all()

    # Every log under AIRFLOW_HOME (task logs, dag processor, scheduler) and every process's output.
    home_logs = [p for p in home.rglob("*") if p.is_file() and p.suffix in (".log", ".json", ".txt", "")]
    process_logs = sorted(tmp_path.glob("*.log"))
    # DEBUG really on: the supervisor logged our Variable writes with their value (the encrypted envelope).
    put = f"PutVariable(key='exactonline_token__{conn_id}', value='{{\"v\": 1"
    assert any(put in p.read_text(errors="replace") for p in process_logs), put
    assert [p for p in home.rglob("*.log") if "dag_id=" in str(p)], "no task log found to scan"
    assert _files_holding(home_logs + process_logs, issued) == {}  # the seed pair and every rotated one
    assert not [s for s in issued for text in outputs if s in text]
