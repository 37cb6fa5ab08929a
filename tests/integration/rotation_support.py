"""Helpers for the token rotation integration tests: a fresh PostgreSQL DB, Airflow subprocesses, checks."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
HERE = Path(__file__).resolve().parent
DAGS = HERE / "dags"
LOOP = DAGS / "exactonline_rotation_loop.py"
REPO = HERE.parent.parent


def pg_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3).close()
        return True
    except Exception:
        return False


requires_pg = pytest.mark.skipif(not pg_available(), reason="needs PostgreSQL at 127.0.0.1:5432 (user postgres)")


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty database ``exactonline_test_<random>``; dropped afterwards. Yields its SQLAlchemy URL."""
    import psycopg2

    name = f"exactonline_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_env(home: Path, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db_url,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    env.update(extra)
    return env


def cluster_env(home: Path, db_url: str, api_port: int, **extra: str) -> dict[str, str]:
    """``airflow_env`` for a real cluster: LocalExecutor, and task processes reach the api-server on ``api_port``."""
    return airflow_env(
        home,
        db_url,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{api_port}",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
        **extra,
    )


def run_airflow(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def create_connection(env: dict[str, str], conn_id: str, fake: Any) -> None:
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
        },
    }
    run_airflow(env, "connections", "add", conn_id, "--conn-json", json.dumps(conn))


class Processes:
    """Subprocesses in their own process groups, logs in files; ``stop_all`` kills them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def dump(self, tail: int = 4000) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"===== {path.name} (last {tail} chars) =====\n{text[-tail:]}")
        return "\n".join(parts)


def wait_http(url: str, timeout: float, procs: Processes) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        for name, proc in procs.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}\n{procs.dump()}")
        time.sleep(0.5)
    raise AssertionError(f"{url} did not come up within {timeout} s\n{procs.dump()}")


def summarize(
    results: list[dict[str, Any]], fake: Any, started: float, ended: float, lifetime: float
) -> dict[str, Any]:
    refreshes = [c for c in fake.token_calls if c.grant_type == "refresh_token" and started <= c.time <= ended + 1]
    ok_times = [c.time for c in refreshes if c.outcome == "ok"]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(ok_times)]
    errors: dict[str, int] = {}
    for result in results:
        for kind, count in (result.get("errors") or {}).items():
            errors[kind] = errors.get(kind, 0) + count
    lease = sorted(s for r in results for s in r.get("lease_seconds", []))
    return {
        "processes": len(results),
        "api_calls": sum(r.get("calls", 0) for r in results),
        "caller_errors": errors,
        "token_calls": len(refreshes),
        "token_outcomes": dict(fake.refresh_errors),
        "lifetimes_covered": round((ended - started) / lifetime, 2),
        "allowed_token_calls": int((ended - started) / lifetime) + 1,
        "refresh_gaps_s": gaps,
        "lease_acquisitions": len(lease),
        "lease_p50_s": round(lease[len(lease) // 2], 3) if lease else None,
        "lease_max_s": round(lease[-1], 3) if lease else None,
        "stores": sorted({",".join(r.get("stores", [])) for r in results}),
        "process_kinds": sorted({str(r.get("process_kind")) for r in results}),
        "orm": sorted({str(r.get("orm"))[:60] for r in results}),
        "messages": [m for r in results for m in r.get("messages", [])][:5],
    }


def assert_rotation_healthy(summary: dict[str, Any], expected_processes: int = 8) -> None:
    assert summary["processes"] == expected_processes, summary
    assert summary["lifetimes_covered"] >= 5, summary
    assert summary["caller_errors"] == {}, summary  # 0 re-authorization errors, 0 "Old refresh token used"
    assert summary["token_outcomes"] == {}, summary  # the fake saw 0 too-early and 0 reused refresh tokens
    assert 0 < summary["token_calls"] <= summary["allowed_token_calls"], summary
    assert summary["api_calls"] > expected_processes * 20, summary


def prepare_cluster(env: dict[str, str], conn_id: str, fake: Any) -> None:
    """Migrate the metadata DB, create the connection and serialize the test DAGs."""
    run_airflow(env, "db", "migrate")
    create_connection(env, conn_id, fake)
    run_airflow(env, "dags", "reserialize")


def start_cluster(procs: Processes, env: dict[str, str], api_port: int, *components: str) -> None:
    """Start the api-server, the scheduler and ``components`` (e.g. "triggerer"); wait until healthy."""
    airflow = str(Path(sys.executable).parent / "airflow")
    procs.start("api-server", [airflow, "api-server", "-p", str(api_port), "-H", "127.0.0.1", "-w", "1"], env)
    for name in ("scheduler", *components):
        procs.start(name, [airflow, name], env)
    wait_http(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", 120, procs)


def rotation_env(
    home: Path, db_url: str, api_port: int, conn_id: str, duration: float, out: Path, **extra: str
) -> dict[str, str]:
    """``cluster_env`` for the rotation DAG (tests/integration/dags/exactonline_token_rotation.py)."""
    return cluster_env(
        home,
        db_url,
        api_port,
        AIRFLOW__CORE__PARALLELISM="16",
        AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="16",
        EXACTONLINE_ROTATION_CONN_ID=conn_id,
        EXACTONLINE_ROTATION_DURATION=str(duration),
        EXACTONLINE_ROTATION_PAUSE="0.2",
        EXACTONLINE_ROTATION_OUT=str(out),
        **extra,
    )


def wait_for_dag_run(db_url: str, dag_id: str, procs: Processes, timeout: float) -> str | None:
    """The state of the newest run of ``dag_id`` once it is success/failed (or at ``timeout``); fails fast if a
    cluster process exits."""
    import psycopg2

    dsn = db_url.replace("postgresql+psycopg2://", "postgresql://")
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT state FROM dag_run WHERE dag_id = %s ORDER BY id DESC LIMIT 1", (dag_id,))
            row = cur.fetchone()
        state = None if row is None else str(row[0])
        if state in ("success", "failed"):
            return state
        for name, proc in procs.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{procs.dump()}"
        time.sleep(2)
    return state
