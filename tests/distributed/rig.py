"""The distributed rig: Airflow's central processes on the host, three Celery workers in network namespaces.

Host: PostgreSQL (a fresh database), api-server, scheduler, dag-processor, triggerer, a private
``redis-server`` (the Celery broker) bound on the bridge address, and the fake Exact Online on the bridge
address. PostgreSQL and the api-server listen on 127.0.0.1 only, so :class:`TcpForwarder` exposes them
on the bridge. Each worker is ``airflow celery worker`` in its own network namespace *and* UTS namespace
(hostname ``eo-wN``, so lease owners and task hostnames name the machine), serving queues ``default`` and
``eo-wN``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration.rotation_support import (
    REPO,
    Processes,
    airflow_env,
    create_connection,
    free_port,
    fresh_pg_database,
    run_airflow,
    start_cluster,
)

from airflow_provider_exactonline.testing import FakeExactOnline

from .netns import Network, TcpForwarder

HERE = Path(__file__).resolve().parent
CONN_ID = "exact_celery"
LIFETIME = 15.0  # access-token lifetime on the fake
LEASE_TTL = 20.0
SETTLE = 3.0  # [exactonline] token_lease_settle_seconds: above the slowest Variable write on a loaded machine
HEARTBEAT_TIMEOUT = 20
WORKERS = ("eo-w1", "eo-w2", "eo-w3")
WARMUP = "exactonline_celery_warmup"
DAG_IDS = ("exactonline_celery_hammer", "exactonline_celery_probe", "exactonline_celery_export", WARMUP)
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@dataclass
class Worker:
    name: str
    ns: str
    address: str
    starts: int = 0


class Rig:
    def __init__(self, root: Path, net: Network, fake: FakeExactOnline, db_url: str, procs: Processes) -> None:
        self.root, self.net, self.fake, self.db_url, self.procs = root, net, fake, db_url, procs
        self.workers: dict[str, Worker] = {}
        self.env: dict[str, str] = {}
        self.worker_env: dict[str, str] = {}
        self.redis_url = ""  # the broker; also what the shared budget's Redis connection points at
        self.api_url = ""  # the api-server, as a browser on the host reaches it
        self.ui_password = ""  # SimpleAuthManager's password of the user "admin"
        self._jwt = ""

    # ------------------------------------------------------------------------------------ database
    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        with psycopg2.connect(self.db_url.replace("postgresql+psycopg2://", "postgresql://")) as conn:
            with conn.cursor() as cur:
                cur.execute(query, args)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
        return rows

    def variable(self, key: str) -> dict[str, Any] | None:
        from cryptography.fernet import Fernet

        rows = self.sql("SELECT val, is_encrypted FROM variable WHERE key = %s", key)
        if not rows or not rows[0][0]:
            return None
        value, encrypted = rows[0]
        return json.loads(Fernet(self.env["AIRFLOW__CORE__FERNET_KEY"]).decrypt(value) if encrypted else value)

    def lease_holder(self) -> str | None:
        """The worker (hostname) holding the refresh lease right now, if any."""
        lease = self.variable(f"exactonline_lease__{CONN_ID}") or {}
        owner, expires = lease.get("owner"), float(lease.get("expires_at") or 0)
        return str(owner).split(":")[0] if owner and expires > time.time() else None

    def tasks(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        rows = self.sql(
            "SELECT task_id, map_index, state, hostname, try_number FROM task_instance"
            " WHERE dag_id = %s AND run_id = %s ORDER BY task_id, map_index",
            dag_id,
            run_id,
        )
        keys = ("task_id", "map_index", "state", "hostname", "try_number")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # ------------------------------------------------------------------------------------ the api-server
    def _bearer(self) -> dict[str, str]:
        """A JWT of the user "admin": SimpleAuthManager's login (``POST /auth/token``), once per rig."""
        import requests

        if not self._jwt:
            login = requests.post(
                f"{self.api_url}/auth/token", json={"username": "admin", "password": self.ui_password}, timeout=60
            )
            assert login.status_code == 201, login.text[:500]
            self._jwt = str(login.json()["access_token"])
        return {"Authorization": f"Bearer {self._jwt}"}

    def ui_get(self, path: str) -> str:
        """GET a page of the real api-server as the logged-in admin."""
        import requests

        page = requests.get(f"{self.api_url}{path}", headers=self._bearer(), timeout=60)
        assert page.status_code == 200, page.text[:2000]
        return page.text

    def api_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to Airflow's REST API (``/api/v2``): a second instead of an ``airflow`` CLI start."""
        import requests

        answer = requests.post(f"{self.api_url}/api/v2{path}", json=body, headers=self._bearer(), timeout=60)
        assert answer.status_code in (200, 201), f"POST {path}: {answer.status_code} {answer.text[:1000]}"
        return dict(answer.json())

    # ------------------------------------------------------------------------------------ dag runs
    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run_id = f"rig__{dag_id}__{secrets.token_hex(4)}"
        self.api_post(f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})
        return run_id

    def wait_dags(self, dag_ids: tuple[str, ...], timeout: float = 180) -> None:
        """Wait until the dag-processor has serialized ``dag_ids`` (instead of a ``dags reserialize`` CLI run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sql("SELECT count(DISTINCT dag_id) FROM serialized_dag WHERE dag_id = ANY(%s)", list(dag_ids))
            if rows and rows[0][0] == len(dag_ids):
                return
            self.check_alive()
            time.sleep(0.5)
        raise AssertionError(f"DAGs {dag_ids} not serialized within {timeout} s\n{self.procs.dump()}")

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        deadline, state = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            rows = self.sql("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", dag_id, run_id)
            state = str(rows[0][0]) if rows else None
            if state in ("success", "failed"):
                return state
            self.check_alive()
            time.sleep(1)
        raise AssertionError(f"{dag_id} {run_id} still {state} after {timeout} s: {self.tasks(dag_id, run_id)}")

    def check_alive(self) -> None:
        for name, proc in self.procs.procs.items():
            if proc.poll() is not None and not name.startswith("eo-w"):
                raise AssertionError(f"{name} exited with {proc.returncode}\n{self.procs.dump()}")

    # ------------------------------------------------------------------------------------ workers
    def start_worker(self, name: str, wait: bool = True) -> None:
        worker = self.workers[name]
        worker.starts += 1
        log_name = f"{name}-{worker.starts}"
        shell = f'hostname {name} && exec "$0" "$@"'
        cmd = ["ip", "netns", "exec", worker.ns, "unshare", "--uts", "sh", "-c", shell, AIRFLOW, "celery", "worker"]
        cmd += ["-H", f"{name}@{name}", "-q", f"default,{name}", "-c", "4", "--skip-serve-logs"]
        cmd += ["--without-gossip", "--without-mingle"]
        env = {**self.worker_env, "AIRFLOW_HOME": str(self.root / name)}
        self.procs.start(log_name, cmd, env)
        if wait:
            self.wait_worker(name)

    def wait_worker(self, name: str, timeout: float = 120) -> None:
        log = self.root / f"{name}-{self.workers[name].starts}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and " ready." in log.read_text(errors="replace"):
                return
            proc = self.procs.procs[log.stem]
            if proc.poll() is not None:
                raise AssertionError(f"worker {name} exited with {proc.returncode}\n{self.procs.dump()}")
            time.sleep(0.5)
        raise AssertionError(f"worker {name} not ready within {timeout} s\n{self.procs.dump()}")

    def kill_worker(self, name: str) -> list[int]:
        """The host dies: ``kill -9`` of every process in the worker's namespace."""
        return self.net.kill_all(self.workers[name].ns)

    def cut(self, name: str, up: bool = False) -> None:
        self.net.set_link(self.workers[name].ns, up)


def _settings(net: Network, api_port: int, api_forward: int, redis_port: int) -> dict[str, str]:
    """Airflow settings every process shares (the same config file on every machine)."""
    from cryptography.fernet import Fernet

    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": str(HERE / "dags"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "32",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "32",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "socket.gethostname",  # no DNS inside the namespaces
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{net.host_ip}:{api_forward}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),  # the same on every machine
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),  # the same on every machine
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{net.host_ip}:{redis_port}/0",
        "AIRFLOW__EXACTONLINE__TOKEN_LEASE_TTL_SECONDS": str(LEASE_TTL),
        "AIRFLOW__EXACTONLINE__TOKEN_LEASE_SETTLE_SECONDS": str(SETTLE),
        "AIRFLOW__EXACTONLINE__TOKEN_REUSE_POLL_SECONDS": "3",
        "PYTHONPATH": os.pathsep.join((str(REPO), str(REPO / "tests" / "integration" / "dags"))),
    }


@contextlib.contextmanager
def distributed_rig(root: Path) -> Iterator[Rig]:
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(Network())
        fake = stack.enter_context(
            FakeExactOnline(
                host=net.host_ip,
                access_token_lifetime=LIFETIME,
                minutely_limit=None,
                daily_limit=None,
                rows={"crm/Accounts": 12_000},
            )
        )
        db_url = stack.enter_context(fresh_pg_database())
        pg = stack.enter_context(TcpForwarder(net.host_ip, "127.0.0.1", 5432))
        api_port, redis_port = free_port(), free_port()
        api = stack.enter_context(TcpForwarder(net.host_ip, "127.0.0.1", api_port))
        settings = _settings(net, api_port, api.port, redis_port)
        procs = Processes(root)
        stack.callback(procs.stop_all)
        rig = Rig(root, net, fake, db_url, procs)
        rig.redis_url = f"redis://{net.host_ip}:{redis_port}"
        rig.api_url = f"http://127.0.0.1:{api_port}"
        rig.ui_password = secrets.token_urlsafe(16)
        (root / "passwords.json").write_text(json.dumps({"admin": rig.ui_password}))
        settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin"
        settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(root / "passwords.json")
        rig.env = airflow_env(root / "central", db_url, **settings)
        worker_db = db_url.replace("@127.0.0.1:5432/", f"@{net.host_ip}:{pg.port}/")
        rig.worker_env = airflow_env(root / "worker", worker_db, **settings)
        procs.start(
            "redis",
            ["redis-server", "--bind", net.host_ip, "--port", str(redis_port), "--save", "", "--protected-mode", "no"],
            rig.env,
        )
        for index, name in enumerate(WORKERS, start=1):
            ns, address = net.add_host(index)
            rig.workers[name] = Worker(name, ns, address)
        # Once the DB is migrated, everything else starts at once; then wait for all of it.
        run_airflow(rig.env, "db", "migrate")
        with ThreadPoolExecutor(1) as pool:
            connection = pool.submit(create_connection, rig.env, CONN_ID, fake)
            for name in WORKERS:
                rig.start_worker(name, wait=False)
            start_cluster(procs, rig.env, api_port, "dag-processor", "triggerer")
            connection.result()
        rig.wait_dags(DAG_IDS)
        for name in WORKERS:
            rig.wait_worker(name)
        # The api-server answers its first Execution API call only after a long warm-up (18-39 s measured on
        # a loaded machine, longer than a task's client retries): pay it here, not in the first scenario.
        warmup = rig.trigger(WARMUP, {})
        assert rig.wait_run(WARMUP, warmup, 300) == "success", rig.tasks(WARMUP, warmup)
        try:
            yield rig
        except BaseException:
            print(procs.dump(6000))
            raise
