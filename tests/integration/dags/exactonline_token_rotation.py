"""Test DAG: 8 mapped tasks share one Exact Online connection through the Task SDK worker path.

Parameters come from the environment the scheduler (and so every task process) inherits:
EXACTONLINE_ROTATION_CONN_ID, _DURATION, _PAUSE, _OUT (a directory for one JSON file per task).
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="exactonline_token_rotation",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=16,
    tags=["test"],
)
def exactonline_token_rotation():
    @task(retries=0)
    def hammer(index: int) -> dict:
        from exactonline_rotation_loop import run

        result = run(
            os.environ["EXACTONLINE_ROTATION_CONN_ID"],
            float(os.environ["EXACTONLINE_ROTATION_DURATION"]),
            float(os.environ.get("EXACTONLINE_ROTATION_PAUSE", "0.2")),
            label=f"task-{index}",
        )
        out = os.environ["EXACTONLINE_ROTATION_OUT"]
        with open(os.path.join(out, f"task-{index}.json"), "w") as handle:
            json.dump(result, handle)
        return {"calls": result["calls"], "errors": result["errors"], "stores": result["stores"]}

    hammer.expand(index=list(range(8)))


exactonline_token_rotation()
