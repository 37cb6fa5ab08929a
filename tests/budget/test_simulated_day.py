"""DONE-WHEN (issue 11), the day's quota: a simulated day on a manual clock shared by the fake and the
hooks. An hourly mirror-like workload (three tasks of five pages each, every hour) needs 360 calls a day
against a daily limit of 300 with a 10 % reserve: what does not fit is deferred (rescheduled) until
after Exact's daily reset and then runs; no task fails for lack of budget, and the fake's own counters
show that reads never touched the reserve (a write still can)."""

from __future__ import annotations

import heapq
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from airflow.exceptions import AirflowRescheduleException

from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore
from airflow_provider_exactonline.budget.ledger import DocumentLedger
from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
from airflow_provider_exactonline.operators.generic import ExactOnlineOperator
from airflow_provider_exactonline.testing import FakeExactOnline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hooks"))
from airflow_db import connection_json
from hook_support import ManualClock

DAY0 = 1_796_083_200.0  # a UTC midnight
DAILY_LIMIT, RESERVE = 300, 30
TASKS = ("accounts", "contacts", "items")  # five pages of 60 rows each
CONN_ID = "exact_simulated_day"


class _TI:
    def __init__(self, task_id: str, run_id: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number = "mirror", task_id, run_id, -1, 1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def test_an_hourly_mirror_over_budget_defers_what_does_not_fit_until_the_reset() -> None:
    clock = ManualClock(DAY0 + 60)
    with FakeExactOnline(
        clock=clock,
        daily_limit=DAILY_LIMIT,
        minutely_limit=None,
        rows={"crm/Accounts": 300},
        access_token_lifetime=10**8,
    ) as fake:
        key = f"AIRFLOW_CONN_{CONN_ID.upper()}"
        os.environ[key] = connection_json(fake, extra={"budget_reserve": 0.10})
        store = InMemoryTokenStore(TokenState.from_extras(json.loads(os.environ[key])["extra"]))
        ledger = DocumentLedger(fake.client_id, clock, 0.10)  # what the Variable would hold
        try:
            queue: list[tuple[float, int, str, str]] = []  # (due, order, task, run) - the "scheduler"
            order = 0
            for hour in range(25):  # the whole first day, and the first hour of the next one
                for task in TASKS:
                    heapq.heappush(queue, (DAY0 + hour * 3600 + 60, order, task, f"hourly__{hour:02d}"))
                    order += 1
            finished: dict[tuple[str, str], float] = {}
            rescheduled: Counter[str] = Counter()
            writes: list[int] = []
            while queue:
                due, _, task, run = heapq.heappop(queue)
                clock.now = max(clock.now, due)
                op = ExactOnlineOperator(
                    task_id=task,
                    endpoint="crm/Accounts",
                    query={"$select": "ID", "$filter": "Blocked eq false"},
                    paginate=True,
                    exactonline_conn_id=CONN_ID,
                    hook_params={"token_store": store, "clock": clock},
                )
                op.hook._budget_ledger = ledger  # type: ignore[attr-defined]
                try:
                    op.execute({"ti": _TI(task, run), "run_id": run})  # any other error fails the test
                except AirflowRescheduleException as again:
                    rescheduled[run] += 1
                    if not writes:  # reads stopped at the reserve; a write may still use it
                        hook = ExactOnlineHook(CONN_ID, token_store=store, clock=clock)
                        writes.append(hook.request("POST", "crm/Accounts", json={"Name": "In reserve"}).status_code)
                    heapq.heappush(queue, (again.reschedule_date.timestamp(), order, task, run))
                    order += 1
                    continue
                finished[(task, run)] = clock.now
        finally:
            os.environ.pop(key, None)

        day_of = lambda t: int(t // 86_400)  # noqa: E731
        reads = Counter(day_of(r.time) for r in fake.requests if r.method == "GET" and r.status == 200)
        first_day = day_of(DAY0)
        assert len(finished) == 25 * len(TASKS)  # every run of every task finished, none failed
        deferred = {run for run in rescheduled}
        assert deferred and all(int(run[-2:]) >= 12 for run in deferred), rescheduled  # the day's tail
        late = [(task, run) for (task, run), at in finished.items() if run in deferred and day_of(at) > first_day]
        assert late, "deferred work ran after the daily reset"
        assert all(day_of(at) == first_day + 1 for (_task, run), at in finished.items() if (_task, run) in late)
        # Reads never dipped into the reserve: at most limit - reserve reads a day, counted by the fake.
        assert reads[first_day] <= DAILY_LIMIT - RESERVE and reads[first_day] >= DAILY_LIMIT - RESERVE - 5
        assert writes == [201] and fake.responses_429 == 0
        print(
            f"\nsimulated day: reads day1={reads[first_day]} day2={reads[first_day + 1]}, "
            f"deferred runs={len(deferred)}, reschedules={sum(rescheduled.values())}"
        )
