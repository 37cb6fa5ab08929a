"""Test DAG: 8 mapped tasks read one division through the real hook (shared budget from the connection's
``budget_redis_conn_id``) on a ScaledClock shared with the fake.

The scheduler's environment names a control file (EXACTONLINE_BUDGET_CONTROL) written by the test before
each run: ``{"scale", "origin", "duration", "dir"}``. Each task warms up (one call), says it is ready and
waits for ``dir/go``, so all eight read at the same time; it writes ``dir/task-<i>.json``.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections import Counter

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="exactonline_shared_budget",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=16,
    tags=["test"],
)
def exactonline_shared_budget():
    @task(retries=0)
    def read(index: int) -> dict:
        from airflow_provider_exactonline.clock import ScaledClock
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        with open(os.environ["EXACTONLINE_BUDGET_CONTROL"]) as handle:
            control = json.load(handle)
        clock = ScaledClock(control["scale"], control["origin"])
        hook = ExactOnlineHook(os.environ["EXACTONLINE_BUDGET_CONN_ID"], clock=clock)
        hook.count("crm/Accounts", filter="Blocked eq false")  # warm-up: imports, token, sharer registered
        out = control["dir"]
        open(os.path.join(out, f"task-{index}.ready"), "w").close()
        deadline = time.monotonic() + 300
        while not os.path.exists(os.path.join(out, "go")) and time.monotonic() < deadline:
            time.sleep(0.05)
        errors: Counter[str] = Counter()
        calls = 0
        end = time.monotonic() + control["duration"]
        while time.monotonic() < end:
            try:
                hook.count("crm/Accounts", filter="Blocked eq false")
                calls += 1
            except Exception:
                errors[traceback.format_exc(limit=1)[-300:]] += 1
        limiter = hook.rate_limiter
        result = {
            "calls": calls,
            "errors": dict(errors),
            "limiter": type(limiter).__name__,
            "fallbacks": getattr(limiter, "fallbacks", None),
            "sharers": getattr(limiter, "sharers", None),
        }
        with open(os.path.join(out, f"task-{index}.json"), "w") as handle:
            json.dump(result, handle)
        return {"calls": calls, "errors": len(errors)}

    read.expand(index=list(range(8)))


exactonline_shared_budget()
