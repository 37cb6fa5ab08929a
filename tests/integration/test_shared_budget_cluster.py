"""DONE-WHEN (issue 11), real Airflow: 8 mapped tasks run by a real scheduler (LocalExecutor, PostgreSQL
metadata DB, api-server) read one division of the fake at 60 calls a minute on a scaled clock, sharing
the budget through a private redis-server named in the connection's ``budget_redis_conn_id``.

Run 1: Redis up all along: 0 HTTP 429 at the fake and >= 90 % of the ceiling used.
Run 2: Redis killed mid-run: every task finishes without error, 429s bounded (each waited out).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.testing import FakeExactOnline

from .rotation_support import (
    Processes,
    cluster_env,
    free_port,
    fresh_pg_database,
    requires_pg,
    run_airflow,
    start_cluster,
    wait_for_dag_run,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "budget"))
from redis_support import RedisServer

DAG_ID = "exactonline_shared_budget"
CONN_ID = "exact_shared_budget"
DAGS = Path(__file__).resolve().parent / "budget_dags"
SCALE = 10.0  # one Exact minute = 6 real seconds
DURATION = 40.0  # real seconds of reading per run: about 6 Exact minutes


def _connection(env: dict[str, str], fake: FakeExactOnline, redis_port: int) -> None:
    tokens = fake.issue_tokens()
    now = time.time()
    conn = {
        "conn_type": "exactonline",
        "host": fake.base_url,
        "login": fake.client_id,
        "password": fake.client_secret,
        "extra": {
            "division": fake.current_division,
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "token_expires_at": now + float(tokens["expires_in"]),
            "token_obtained_at": now,
            "budget_redis_conn_id": "budget_redis",
        },
    }
    run_airflow(env, "connections", "add", CONN_ID, "--conn-json", json.dumps(conn))
    run_airflow(env, "connections", "add", "budget_redis", "--conn-uri", f"redis://127.0.0.1:{redis_port}/0")


def _run(
    env: dict[str, str],
    db_url: str,
    procs: Processes,
    fake: FakeExactOnline,
    clock: ScaledClock,
    run_dir: Path,
    redis: RedisServer,
    kill_redis_after: float | None,
) -> dict[str, Any]:
    run_dir.mkdir()
    control = Path(env["EXACTONLINE_BUDGET_CONTROL"])
    control.write_text(json.dumps({"scale": SCALE, "origin": clock.origin, "duration": DURATION, "dir": str(run_dir)}))
    run_airflow(env, "dags", "trigger", DAG_ID)
    deadline = time.monotonic() + 300
    while len(list(run_dir.glob("*.ready"))) < 8:
        assert time.monotonic() < deadline, f"tasks not ready\n{procs.dump(6000)}"
        for name, proc in procs.procs.items():
            assert proc.poll() is None, f"{name} exited\n{procs.dump()}"
        time.sleep(0.2)
    (run_dir / "go").touch()
    started = clock.time()
    if kill_redis_after is not None:
        time.sleep(kill_redis_after)
        redis.stop()
    state = wait_for_dag_run(db_url, DAG_ID, procs, DURATION + 240)
    ended = started + DURATION * SCALE
    results = [json.loads(p.read_text()) for p in sorted(run_dir.glob("task-*.json"))]
    ok = [r.time for r in fake.requests if r.status == 200 and "/api/v1/" in r.path and started <= r.time <= ended]
    first, last = int(started // 60) + 1, int(ended // 60) - 1
    per_minute = Counter(int(t // 60) for t in ok)
    full = [per_minute[m] for m in range(first, last + 1)]
    return {
        "state": state,
        "results": results,
        "ceiling_share": round(sum(full) / (60 * len(full)), 3) if full else 0.0,
        "full_minutes": len(full),
        "calls": len(ok),
    }


@pytest.mark.integration
@requires_pg
@pytest.mark.timeout(1500)
def test_eight_airflow_tasks_share_one_division_and_survive_redis_stopping(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    redis = RedisServer()
    redis.start()
    clock = ScaledClock(SCALE)
    port = free_port()
    procs = Processes(tmp_path)
    with (
        FakeExactOnline(clock=clock, minutely_limit=60, daily_limit=None, access_token_lifetime=10**7) as fake,
        fresh_pg_database() as db_url,
    ):
        env = cluster_env(
            tmp_path / "home",
            db_url,
            port,
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
            AIRFLOW__CORE__PARALLELISM="16",
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="16",
            EXACTONLINE_BUDGET_CONN_ID=CONN_ID,
            EXACTONLINE_BUDGET_CONTROL=str(tmp_path / "control.json"),
        )
        try:
            run_airflow(env, "db", "migrate")
            _connection(env, fake, redis.port)
            run_airflow(env, "dags", "reserialize")
            start_cluster(procs, env, port)
            run_airflow(env, "dags", "unpause", DAG_ID)

            shared = _run(env, db_url, procs, fake, clock, tmp_path / "run1", redis, None)
            shared_429 = fake.responses_429
            print("\nshared budget, 8 Airflow tasks:", {k: v for k, v in shared.items() if k != "results"}, shared_429)
            assert shared["state"] == "success", shared
            assert len(shared["results"]) == 8 and all(r["errors"] == {} for r in shared["results"]), shared
            assert {r["limiter"] for r in shared["results"]} == {"RedisRateLimiter"}
            assert shared_429 == 0
            assert shared["full_minutes"] >= 4
            assert shared["ceiling_share"] >= 0.90, shared

            stopped = _run(env, db_url, procs, fake, clock, tmp_path / "run2", redis, DURATION / 3)
            stopped_429 = fake.responses_429 - shared_429
            print("Redis stopped mid-run:", {k: v for k, v in stopped.items() if k != "results"}, stopped_429)
            assert stopped["state"] == "success", stopped
            assert len(stopped["results"]) == 8 and all(r["errors"] == {} for r in stopped["results"]), stopped
            assert all(r["fallbacks"] >= 1 for r in stopped["results"])  # every task lost Redis
            assert stopped_429 <= 8, stopped  # bounded; each waited out (no task error above)
        except BaseException:
            print(procs.dump(6000))
            raise
        finally:
            procs.stop_all()
            redis.stop()
