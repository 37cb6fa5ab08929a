"""Issue 14: after real rotations by real worker *and triggerer* processes under DEBUG logging, no token
the fake issued is in the raw Variable row, in any log file under AIRFLOW_HOME, or in any process's
stdout/stderr (api-server, scheduler, triggerer and the task processes they start).

A scheduler (LocalExecutor) runs the rotation DAG's 8 mapped tasks under the Task SDK supervisor, whose
DEBUG log prints every Variable write with its value: only the encrypted envelope may appear there. At
the same time a deferrable ExactOnlineSensor (connection ``exact_triggerer`` on a second fake, so the two
token chains stay apart) waits in a real ``airflow triggerer`` while its access token expires: the trigger
rotates it there, and the triggerer's output and the trigger's log are scanned too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from airflow_provider_exactonline.auth.token_encryption import decrypt_json, is_encrypted
from airflow_provider_exactonline.testing import FakeExactOnline

from .rotation_support import (
    Processes,
    create_connection,
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
SENSOR_DAG_ID, SENSOR_TASK_ID = "exactonline_triggerer_sensor", "wait_for_invoice"
SENSOR_CONN_ID = "exact_triggerer"  # hard-coded in dags/exactonline_triggerer_sensor.py
INVOICE_NUMBER = 77000014


def _query(db_url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    import psycopg2

    with psycopg2.connect(db_url.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def _sensor_state(db_url: str) -> str | None:
    rows = _query(
        db_url, "SELECT state FROM task_instance WHERE dag_id = %s AND task_id = %s", SENSOR_DAG_ID, SENSOR_TASK_ID
    )
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def _wait(what: str, check: Callable[[], object], timeout: float, procs: Processes) -> float:
    """Poll ``check()`` until true (fails fast if a cluster process exits); returns when it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        for name, proc in procs.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _rotate_in_the_triggerer(env: dict[str, str], db_url: str, fake: FakeExactOnline, procs: Processes) -> int:
    """Defer the sensor, let the triggerer refresh its token, then let it fire; returns the triggerer's refreshes."""
    conf = json.dumps({"invoice_number": INVOICE_NUMBER})
    run_airflow(env, "dags", "trigger", SENSOR_DAG_ID, "--conf", conf)
    deferred_at = _wait("the sensor to defer", lambda: _sensor_state(db_url) == "deferred", 180, procs)

    def refreshed_while_deferred() -> bool:
        calls = [c for c in fake.token_calls if c.grant_type == "refresh_token" and c.time > deferred_at]
        return any(c.outcome == "ok" for c in calls)

    _wait("a refresh in the triggerer", refreshed_while_deferred, 3 * LIFETIME + 60, procs)
    fake.create_record(
        "salesinvoice/SalesInvoices",
        fake.current_division,
        {
            "InvoiceNumber": INVOICE_NUMBER,
            "Status": 50,
            "OrderedBy": fake.key_of("crm/Accounts", 0),
            "InvoiceToName": "Debug Log Payer BV",
            "AmountDC": 121.0,
        },
    )
    fired_at = _wait("the sensor to succeed", lambda: _sensor_state(db_url) == "success", 180, procs)
    # While the task instance was deferred no worker ran it: these refreshes were the triggerer's.
    return len(
        [
            c
            for c in fake.token_calls
            if c.grant_type == "refresh_token" and c.outcome == "ok" and deferred_at < c.time < fired_at
        ]
    )


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
        FakeExactOnline(access_token_lifetime=LIFETIME, minutely_limit=None, daily_limit=None) as sensor_fake,
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
        create_connection(env, SENSOR_CONN_ID, sensor_fake)
        procs = Processes(tmp_path)
        try:
            start_cluster(procs, env, port, "triggerer")
            started = time.time()
            outputs.append(run_airflow(env, "dags", "trigger", DAG_ID))
            triggerer_refreshes = _rotate_in_the_triggerer(env, db_url, sensor_fake, procs)
            print(f"\ntriggerer: {triggerer_refreshes} refresh(es) while the sensor was deferred")
            assert triggerer_refreshes >= 1 and sensor_fake.refresh_errors == {}, sensor_fake.token_calls
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
            sensor_issued = {t[k] for t in sensor_fake.token_chain for k in ("access_token", "refresh_token")}
            assert len(sensor_fake.token_chain) >= 1 + triggerer_refreshes  # the seed, the triggerer's pairs
            issued |= sensor_issued

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
    # The triggerer ran at DEBUG too, and its trigger's log (next to the task's) is among the scanned files.
    triggerer_out = (tmp_path / "triggerer.log").read_text(errors="replace")
    assert "[debug" in triggerer_out.lower() or " debug " in triggerer_out.lower(), triggerer_out[-3000:]
    assert list(home.rglob(f"task_id={SENSOR_TASK_ID}/*.log.trigger.*.log")), "no trigger log found to scan"
    assert _files_holding(home_logs + process_logs, issued) == {}  # the seed pair and every rotated one
    assert not [s for s in issued for text in outputs if s in text]
