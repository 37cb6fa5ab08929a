"""DONE-WHEN, triggerer path: a deferrable ExactOnlineSensor waits in a real ``airflow triggerer``
(api-server + scheduler with LocalExecutor + dag-processor + triggerer on PostgreSQL) while the access
token expires several times. The trigger must refresh it *in the triggerer*, where the ORM is blocked
and the only writable token store is the Variable store, written through the triggerer's comms.
``dag.test()`` runs triggers inline and ``tests/triggers/`` runs them without a supervisor; neither
proves this.

While the sensor's task instance is ``deferred`` no worker runs it, so every token call the fake sees in
that window came from the triggerer.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_exactonline.auth.token_encryption import decrypt_json
from airflow_provider_exactonline.testing import FakeExactOnline

from .rotation_support import (
    Processes,
    cluster_env,
    free_port,
    fresh_pg_database,
    prepare_cluster,
    requires_pg,
    run_airflow,
    start_cluster,
)

LIFETIME = 8.0  # access token lifetime on the fake, seconds
DAG_ID = "exactonline_triggerer_sensor"
TASK_ID = "wait_for_invoice"
CONN_ID = "exact_triggerer"  # hard-coded in dags/exactonline_triggerer_sensor.py
INVOICE_NUMBER = 77000042


def _query(db_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg2

    dsn = db_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def _sensor_state(db_url: str) -> str | None:
    rows = _query(db_url, "SELECT state FROM task_instance WHERE dag_id = %s AND task_id = %s", DAG_ID, TASK_ID)
    return None if not rows or rows[0][0] is None else str(rows[0][0])


def _run_state(db_url: str) -> str | None:
    rows = _query(db_url, "SELECT state FROM dag_run WHERE dag_id = %s ORDER BY id DESC LIMIT 1", DAG_ID)
    return None if not rows else str(rows[0][0])


def _task_states(db_url: str) -> dict[str, str]:
    rows = _query(db_url, "SELECT task_id, coalesce(state, 'none') FROM task_instance WHERE dag_id = %s", DAG_ID)
    return {str(t): str(s) for t, s in rows}


def _check_alive(procs: Processes) -> None:
    for name, proc in procs.procs.items():
        assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{procs.dump()}"


def _wait_for(what: str, predicate: Any, timeout: float, procs: Processes, db_url: str) -> float:
    """Poll ``predicate()`` every 0.5 s; returns the time it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        _check_alive(procs)
        if _run_state(db_url) == "failed":
            raise AssertionError(f"dag run failed while waiting for {what}: {_task_states(db_url)}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {_task_states(db_url)}")


def _logs(home: Path, log_dir: Path) -> dict[str, str]:
    files = [*log_dir.glob("*.log"), *(home / "logs").rglob("*")]
    return {str(p): p.read_text(errors="replace") for p in files if p.is_file()}


@pytest.mark.integration
@requires_pg
@pytest.mark.timeout(420)
def test_deferred_sensor_refreshes_tokens_in_a_real_triggerer(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    log_dir = tmp_path / "proc-logs"
    log_dir.mkdir()
    with (
        FakeExactOnline(access_token_lifetime=LIFETIME, minutely_limit=None, daily_limit=None) as fake,
        fresh_pg_database() as db_url,
    ):
        env = cluster_env(
            home,
            db_url,
            port,
            # The dag-processor only has to keep what `dags reserialize` wrote; spare the 2 shared cores.
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="600",
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="600",
        )
        prepare_cluster(env, CONN_ID, fake)
        procs = Processes(log_dir)
        try:
            start_cluster(procs, env, port, "dag-processor", "triggerer")
            run_airflow(env, "dags", "unpause", DAG_ID)
            run_airflow(env, "dags", "trigger", DAG_ID, "--conf", json.dumps({"invoice_number": INVOICE_NUMBER}))

            # 1. The worker pokes once, finds nothing and defers.
            deferred_at = _wait_for(
                "the sensor to defer", lambda: _sensor_state(db_url) == "deferred", 150, procs, db_url
            )
            # 2. Let the token expire three times while only the triggerer holds the wait.
            while time.time() < deferred_at + 3 * LIFETIME + 2:
                _check_alive(procs)
                assert _sensor_state(db_url) == "deferred", _task_states(db_url)
                time.sleep(1)
            created_at = time.time()
            fake.create_record(
                "salesinvoice/SalesInvoices",
                fake.current_division,
                {
                    "InvoiceNumber": INVOICE_NUMBER,
                    "Status": 50,
                    "OrderedBy": fake.key_of("crm/Accounts", 0),
                    "InvoiceToName": "Deferred Payer BV",
                    "AmountDC": 242.0,
                },
            )
            # 3. The trigger fires, a worker resumes the sensor, the downstream task checks the row.
            _wait_for("the dag run to finish", lambda: _run_state(db_url) == "success", 120, procs, db_url)
            ended = time.time()

            calls = fake.token_calls
            refreshes = [c for c in calls if c.grant_type == "refresh_token"]
            in_triggerer = [c for c in refreshes if deferred_at <= c.time <= created_at]
            polls_after_defer = [
                r
                for r in fake.requests
                if "salesinvoices" in r.path.lower() and r.method == "GET" and deferred_at <= r.time
            ]
            polls = [r for r in polls_after_defer if r.time <= created_at]
            stored = decrypt_json(
                run_airflow(env, "variables", "get", f"exactonline_token__{CONN_ID}"), fake.client_secret, CONN_ID
            )
            db_rows = _query(db_url, "SELECT count(*) FROM variable WHERE key = %s", f"exactonline_token__{CONN_ID}")
            triggerer_jobs = {
                int(r[0]) for r in _query(db_url, "SELECT id FROM job WHERE job_type = %s", "TriggererJob")
            }
            # The triggerer writes a trigger's log next to the task's, suffixed with its own job id.
            trigger_logs = {
                p: p.read_text(errors="replace")
                for p in (home / "logs").rglob(f"task_id={TASK_ID}/*.log.trigger.*.log")
            }
            trigger_log = "\n".join(trigger_logs.values())
            after_defer = [c for c in refreshes if c.time >= deferred_at]
            summary: dict[str, Any] = {
                "deferred_for_s": round(created_at - deferred_at, 1),
                "lifetimes_while_deferred": round((created_at - deferred_at) / LIFETIME, 2),
                "refresh_grants_total": len(refreshes),
                "refresh_grants_while_deferred": len(in_triggerer),
                "refresh_outcomes": sorted({c.outcome for c in refreshes}),
                "refresh_errors": dict(fake.refresh_errors),
                "refresh_gaps_s": [round(b.time - a.time, 2) for a, b in itertools.pairwise(in_triggerer)],
                "polls_while_deferred": len(polls),
                "poll_statuses": sorted({r.status for r in polls}),
                "resume_after_create_s": round(ended - created_at, 1),
                "trigger_log_files": sorted(p.name for p in trigger_logs),
                "triggerer_jobs": sorted(triggerer_jobs),
                "leases_in_trigger_log": trigger_log.count("Took Exact Online token lease"),
            }
            print("\ntriggerer path:", json.dumps(summary, indent=1))

            assert _task_states(db_url) == {TASK_ID: "success", "got_invoice": "success"}
            # Refreshed in the triggerer: no worker runs a deferred task.
            assert summary["lifetimes_while_deferred"] >= 3, summary
            assert len(in_triggerer) >= 2, summary
            assert summary["refresh_outcomes"] == ["ok"], summary
            assert summary["refresh_errors"] == {}, summary  # no "Old refresh token used", no too-early
            assert len(refreshes) <= int((ended - deferred_at) / LIFETIME) + 3, summary  # no refresh storms
            assert summary["poll_statuses"] == [200], summary  # never a 401
            # Each token the triggerer obtained was used: a poll follows every refresh, before the next one.
            # (How many polls fit in the window depends on the machine's load, not on the trigger.)
            # The last window ends with the run: the poll that found the invoice may be the first after it.
            windows = [*(c.time for c in in_triggerer), ended]
            assert all(any(a <= r.time <= b for r in polls_after_defer) for a, b in itertools.pairwise(windows)), (
                summary
            )
            # The newest pair was persisted to the Variable in the metadata DB, not only kept in memory.
            assert db_rows == [(1,)]
            assert stored["refresh_token"] == fake.current_refresh_token
            assert stored["access_token"] == fake.current_access_token
            # ...by the trigger, running in the triggerer process (whose job id names the log file), not inline.
            assert len(trigger_logs) == 1, summary
            assert any(p.name.endswith(f".trigger.{job}.log") for p in trigger_logs for job in triggerer_jobs), summary
            assert "starting" in trigger_log and "Trigger fired event" in trigger_log, trigger_log[-3000:]
            # The triggerer's runner is a Task SDK process with the ORM blocked: only the Variable store is writable.
            assert (
                f"tokens for '{CONN_ID}' from stores variable, connection (read-only) (task-sdk process, ORM blocked)"
                in trigger_log
            ), trigger_log[-3000:]
            assert "'status': 'success'" in trigger_log and str(INVOICE_NUMBER) in trigger_log, trigger_log[-3000:]
            assert summary["leases_in_trigger_log"] == len(after_defer), summary  # every refresh was the trigger's
            assert "running trigger in line" not in "\n".join(_logs(home, log_dir).values())
        except BaseException:
            print(procs.dump(8000))
            for path, text in _logs(home, log_dir).items():
                if "trigger" in Path(path).name and not path.endswith("triggerer.log"):
                    print(f"===== {path} =====\n{text[-4000:]}")
            raise
        finally:
            procs.stop_all()
