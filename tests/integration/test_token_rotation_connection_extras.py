"""DONE-WHEN, connection-extras path: 8 OS processes allowed to use the ORM share one connection in
PostgreSQL and call the API for more than 5 token lifetimes; tokens rotate under the row lock.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from airflow_provider_exactonline.testing import FakeExactOnline

from .rotation_support import (
    LOOP,
    Processes,
    airflow_env,
    assert_rotation_healthy,
    create_connection,
    fresh_pg_database,
    requires_pg,
    run_airflow,
    summarize,
)

LIFETIME = 15.0
DURATION = 5 * LIFETIME + 8


@pytest.mark.integration
@requires_pg
@pytest.mark.timeout(400)
def test_eight_orm_processes_rotate_through_connection_extras(tmp_path) -> None:
    conn_id = "exact_rotation"
    with (
        FakeExactOnline(access_token_lifetime=LIFETIME, minutely_limit=None, daily_limit=None) as fake,
        fresh_pg_database() as db_url,
    ):
        # Server context, as in the api-server and scheduler: connections come from the metastore.
        env = airflow_env(tmp_path / "home", db_url, _AIRFLOW_PROCESS_CONTEXT="server")
        run_airflow(env, "db", "migrate")
        create_connection(env, conn_id, fake)
        procs = Processes(tmp_path)
        out = tmp_path / "results"
        out.mkdir()
        started = time.time()
        try:
            for i in range(8):
                procs.start(
                    f"proc-{i}",
                    [
                        sys.executable,
                        str(LOOP),
                        "--conn-id",
                        conn_id,
                        "--duration",
                        str(DURATION),
                        "--label",
                        f"proc-{i}",
                        "--out",
                        str(out / f"proc-{i}.json"),
                    ],
                    env,
                )
            for proc in procs.procs.values():
                proc.wait(DURATION + 120)
            ended = time.time()
            results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
            crashed = [r for r in results if "crashed" in r]
            assert not crashed and len(results) == 8, f"{crashed[:1]}\n{procs.dump()}"
            summary = summarize(results, fake, started, ended, LIFETIME)
            print("\nconnection-extras path:", json.dumps(summary, indent=1))
            assert summary["stores"] == ["connection-extras,variable"], summary
            assert summary["orm"] == ["allowed"], summary
            assert_rotation_healthy(summary)
            # The connection row holds the live pair (written under the row lock).
            shown = run_airflow(env, "connections", "get", conn_id, "-o", "json")
            assert fake.current_refresh_token in shown
        except BaseException:
            print(procs.dump())
            raise
        finally:
            procs.stop_all()
