"""Test DAGs for the distributed (CeleryExecutor) rig. Parameters come from ``dag_run.conf``.

- ``exactonline_celery_hammer``: ``count`` mapped tasks run the rotation loop of tests/integration for
  ``duration`` s (conf: conn_id, count, duration, pause, out) and write one JSON file each, with the host.
- ``exactonline_celery_probe``: one task per worker queue (``eo-w1..3``), each makes one API call and writes
  what happened (error type and message, seconds taken) before re-raising.
- ``exactonline_celery_export``: a full export of crm/Accounts to ``conf["path"]``, retried once.
- ``exactonline_celery_warmup``: one no-op task per worker queue, run once when the rig starts (it pays the
  api-server's slow first Execution API call and each worker's first task start).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_provider_exactonline.operators.exactonline import ExactOnlineToObjectStorageOperator

CONN_ID = "exact_celery"
WORKER_QUEUES = ("eo-w1", "eo-w2", "eo-w3")
START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _conf() -> dict:
    return dict(get_current_context()["dag_run"].conf or {})


@dag(dag_id="exactonline_celery_hammer", schedule=None, start_date=START, catchup=False, max_active_tasks=32)
def exactonline_celery_hammer():
    @task
    def indices() -> list[int]:
        return list(range(int(_conf().get("count", 24))))

    @task(retries=0)
    def hammer(index: int) -> dict:
        from exactonline_rotation_loop import run  # tests/integration/dags, on PYTHONPATH

        conf = _conf()
        result = run(conf.get("conn_id", CONN_ID), float(conf["duration"]), float(conf.get("pause", 0.5)), f"t{index}")
        result.update(host=socket.gethostname(), started=time.time() - float(conf["duration"]), ended=time.time())
        with open(os.path.join(conf["out"], f"task-{index}.json"), "w") as handle:
            json.dump(result, handle)
        return {"calls": result["calls"], "errors": result["errors"], "host": result["host"]}

    hammer.expand(index=indices())


@dag(dag_id="exactonline_celery_probe", schedule=None, start_date=START, catchup=False)
def exactonline_celery_probe():
    for queue in WORKER_QUEUES:

        @task(task_id=f"probe_{queue.replace('-', '_')}", queue=queue, retries=0)
        def probe() -> str:
            from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

            conf, started = _conf(), time.monotonic()
            outcome = {"host": socket.gethostname(), "error": None, "message": None}
            try:
                ExactOnlineHook(conf.get("conn_id", CONN_ID)).current_user()
            except Exception as err:
                outcome.update(error=type(err).__name__, message=str(err)[:500])
                raise
            finally:
                outcome["seconds"] = round(time.monotonic() - started, 2)
                with open(os.path.join(conf["out"], f"probe-{outcome['host']}.json"), "w") as handle:
                    json.dump(outcome, handle)
            return str(outcome["host"])

        probe()


@dag(dag_id="exactonline_celery_export", schedule=None, start_date=START, catchup=False)
def exactonline_celery_export():
    ExactOnlineToObjectStorageOperator(
        task_id="export_accounts",
        exactonline_conn_id=CONN_ID,
        entity="crm/Accounts",
        mode="full",
        format="jsonl",
        select=["ID", "Code", "Name", "City"],
        rows_per_part=2_000,
        path="{{ dag_run.conf['path'] }}",
        retries=1,
        retry_delay=dt.timedelta(seconds=1),
    )


@dag(dag_id="exactonline_celery_warmup", schedule=None, start_date=START, catchup=False)
def exactonline_celery_warmup():
    for queue in WORKER_QUEUES:

        @task(task_id=f"warm_{queue.replace('-', '_')}", queue=queue, retries=3, retry_delay=dt.timedelta(seconds=1))
        def warm() -> str:
            return socket.gethostname()

        warm()


exactonline_celery_hammer()
exactonline_celery_probe()
exactonline_celery_export()
exactonline_celery_warmup()
