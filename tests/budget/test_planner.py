"""The day's quota: ledger, planner and the check around every Exact operator's ``execute``, against the
fake over loopback (daily limit small, so a "day" is a few dozen calls)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowRescheduleException, TaskDeferred

from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore
from airflow_provider_exactonline.budget import planner
from airflow_provider_exactonline.budget.ledger import DocumentLedger, RedisLedger, task_key
from airflow_provider_exactonline.exceptions import ExactOnlineRateLimitExceeded
from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
from airflow_provider_exactonline.operators.generic import ExactOnlineOperator
from airflow_provider_exactonline.ratelimit import RateLimitState
from airflow_provider_exactonline.testing import FakeExactOnline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from airflow_db import connection_json

CONN_ID = "exact_budget_planner"
READ = "crm/Accounts?$filter=Blocked%20eq%20false"


@pytest.fixture
def fake() -> Iterator[FakeExactOnline]:
    with FakeExactOnline(daily_limit=40, minutely_limit=None, rows={"crm/Accounts": 150}) as server:
        yield server


@pytest.fixture
def conn(fake: FakeExactOnline) -> Iterator[dict[str, Any]]:
    key = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    os.environ[key] = connection_json(fake, extra={"budget_reserve": 0.25})
    extras = json.loads(os.environ[key])["extra"]
    yield {
        "exactonline_conn_id": CONN_ID,
        "hook_params": {"token_store": InMemoryTokenStore(TokenState.from_extras(extras))},
    }
    os.environ.pop(key, None)


class _TI:
    def __init__(self, task_id: str, map_index: int = -1) -> None:
        self.dag_id, self.task_id, self.map_index, self.try_number = "mirror", task_id, map_index, 1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _ctx(task_id: str, map_index: int = -1) -> dict[str, Any]:
    return {"ti": _TI(task_id, map_index), "run_id": "manual__t"}


def _hook(conn: dict[str, Any], ledger: Any = None) -> ExactOnlineHook:
    hook = ExactOnlineHook(conn["exactonline_conn_id"], **conn["hook_params"])
    hook._budget_ledger = ledger or DocumentLedger(hook.config.client_id, hook.clock, 0.25)  # type: ignore[attr-defined]
    return hook


def _operator(conn: dict[str, Any], task_id: str, **kwargs: Any) -> ExactOnlineOperator:
    op = ExactOnlineOperator(
        task_id=task_id,
        endpoint="crm/Accounts",
        query={"$select": "ID", "$filter": "Blocked eq false"},
        paginate=True,
        **conn,
        **kwargs,
    )
    op.hook._budget_ledger = DocumentLedger(op.hook.config.client_id, op.hook.clock, 0.25)  # type: ignore[attr-defined]
    return op


def test_task_key_names_dag_task_and_map_index() -> None:
    assert task_key(_ctx("t")) == "mirror.t" and task_key(_ctx("t", 3)) == "mirror.t.3"
    assert task_key({}) is None


def test_reads_stop_at_the_reserve_writes_may_use_it(fake: FakeExactOnline, conn: dict[str, Any]) -> None:
    hook = _hook(conn)
    with pytest.raises(ExactOnlineRateLimitExceeded) as info:
        for _ in range(41):
            hook.get(READ, params={"$top": 1})
    assert info.value.scope == "daily" and "reserve" in str(info.value)
    assert fake.count_requests("crm/Accounts") == 30  # 40 a day, 25 % (10 calls) kept back from reads
    hook.request("POST", "crm/Accounts", json={"Name": "Uses the reserve"})  # a write may
    assert fake.count_requests("crm/Accounts") == 31 and fake.responses_429 == 0


def test_planner_defers_what_does_not_fit_and_records_it(fake: FakeExactOnline, conn: dict[str, Any]) -> None:
    hook = _hook(conn)
    assert planner.check_budget(hook, "mirror.accounts") is not None
    for _ in range(12):
        hook.get(READ, params={"$top": 1})
    planner.record_cost(hook, "mirror.accounts", 12)
    check = planner.ensure_budget(hook, "mirror.accounts")  # 28 left, 18 for reads: 12 fit
    assert check is not None and check.fits and check.budget.for_reads == 18
    for _ in range(10):
        hook.get(READ, params={"$top": 1})
    with pytest.raises(planner.ExactOnlineBudgetDeferred) as info:  # 8 for reads < 12
        planner.ensure_budget(hook, "mirror.accounts")
    reset = hook.rate_limit.daily_reset
    assert reset is not None and info.value.reset_at == reset + 1.0 and info.value.task == "mirror.accounts"
    day = hook._budget_ledger.day(1001)  # type: ignore[attr-defined]
    assert day.calls_today == 22 and day.remaining == 18 and day.reserve == 10
    assert len(day.deferred) == 1 and day.deferred[0].startswith("mirror.accounts until ")


def test_operator_reschedules_until_the_reset_then_records_cost(fake: FakeExactOnline, conn: dict[str, Any]) -> None:
    first = _operator(conn, "accounts")
    first.execute(_ctx("accounts"))  # 150 rows, 60 a page: 3 calls
    ledger = first.hook._budget_ledger  # type: ignore[attr-defined]
    assert ledger.cost(1001, "mirror.accounts") == 3
    second = _operator(conn, "accounts")
    second.hook._budget_ledger = ledger  # type: ignore[attr-defined]
    ledger.observe(1001, RateLimitState(40, 12, first.hook.rate_limit.daily_reset))  # 2 for reads
    before = fake.count_requests("crm/Accounts")
    with pytest.raises(AirflowRescheduleException) as info:
        second.execute(_ctx("accounts"))
    assert fake.count_requests("crm/Accounts") == before  # deferred before its first read
    reset = dt.datetime.fromtimestamp(first.hook.rate_limit.daily_reset + 1, tz=dt.timezone.utc)  # type: ignore[operator]
    assert info.value.reschedule_date == reset
    assert ledger.day(1001).deferred[0].startswith("mirror.accounts until ")


def test_deferrable_operator_waits_in_the_triggerer(fake: FakeExactOnline, conn: dict[str, Any]) -> None:
    op = _operator(conn, "accounts", deferrable=True)
    ledger = op.hook._budget_ledger  # type: ignore[attr-defined]
    ledger.record_cost(1001, "mirror.accounts", 50)  # more than a whole day's reads
    ledger.observe(1001, RateLimitState(40, 40, planner.next_utc_midnight(op.hook.clock.time())))
    with pytest.raises(TaskDeferred) as info:
        op.execute(_ctx("accounts"))
    assert info.value.method_name == "resume_after_budget_reset"
    assert type(info.value.trigger).__name__ == "DateTimeTrigger"


def test_read_refused_mid_run_defers_instead_of_failing(fake: FakeExactOnline, conn: dict[str, Any]) -> None:
    hook = _hook(conn)
    for _ in range(28):
        hook.get(READ, params={"$top": 1})
    op = _operator(conn, "accounts")  # a new process: knows nothing of today, needs 3 calls, 2 may go
    with pytest.raises(AirflowRescheduleException):
        op.execute(_ctx("accounts"))
    ledger = op.hook._budget_ledger  # type: ignore[attr-defined]
    assert ledger.cost(1001, "mirror.accounts") == 2  # a lower bound: what it spent before the refusal
    assert "would have used the reserve" in ledger.day(1001).deferred[0]
    assert fake.count_requests("crm/Accounts") == 30  # never past the reserve


def test_redis_ledger_keeps_costs_and_deferrals_next_to_the_shared_budget(
    fake: FakeExactOnline, conn: dict[str, Any], redis_server: Any
) -> None:
    from airflow_provider_exactonline.budget.redis_limiter import RedisRateLimiter

    hook = ExactOnlineHook(CONN_ID, **conn["hook_params"])
    hook._rate_limiter = RedisRateLimiter(redis_server.client, fake.client_id, hook.clock, reserve=0.25)
    for _ in range(5):
        hook.get(READ, params={"$top": 1})
    planner.record_cost(hook, "mirror.accounts", 5)
    planner.deferral(hook, "mirror.contacts", 1001, 1e10, "test")
    other = RedisLedger(redis_server.client(), fake.client_id, hook.clock, 0.25)  # another process
    day = other.day(1001)
    assert (day.limit, day.remaining, day.reserve, day.calls_today) == (40, 35, 10, 5)
    assert other.cost(1001, "mirror.accounts") == 5 and other.divisions() == [1001]
    assert day.deferred and day.deferred[0].startswith("mirror.contacts until ")


def test_an_unreadable_ledger_never_stops_a_task() -> None:
    class Broken:
        def day(self, division: int) -> Any:
            raise ConnectionError("redis went away")

    class Hook:
        division = 1001
        _budget_ledger = Broken()

    assert planner.ensure_budget(Hook(), "mirror.accounts") is None


def test_mirror_task_is_rescheduled_when_its_last_cost_no_longer_fits(
    fake: FakeExactOnline, conn: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_exactonline.mirror.dag import mirror_one
    from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

    monkeypatch.setenv(
        "AIRFLOW_CONN_EXACT_BUDGET_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "m.db")})
    )
    hook = _hook(conn)
    task = "mirror.mirror.1001.crm/Accounts"
    kwargs: dict[str, Any] = {
        "exactonline_conn_id": CONN_ID,
        "db_conn_id": "exact_budget_db",
        "entity": "crm/Accounts",
        "division": 1001,
        "path": f"file://{tmp_path / 'out'}",
        "watermark_id": "mirror.mirror",
        "watermark_store": MemoryWatermarkStore(),
        "hook": hook,
        "budget_task": task,
    }
    first = mirror_one(run_id="r1", **kwargs)
    ledger = hook._budget_ledger  # type: ignore[attr-defined]
    cost = ledger.cost(1001, task)
    assert first["api_calls"] >= 1 and cost == first["api_calls"]  # the export's calls, the next run's estimate
    reset = hook.rate_limit.daily_reset
    ledger.observe(1001, RateLimitState(40, 10 + cost - 1, reset))  # one call short of it, above the reserve
    before = len(fake.requests)
    with pytest.raises(AirflowRescheduleException) as info:
        mirror_one(run_id="r2", **kwargs)
    assert len(fake.requests) == before  # rescheduled before its first call
    assert info.value.reschedule_date == dt.datetime.fromtimestamp(reset + 1, tz=dt.timezone.utc)  # type: ignore[operator]
    assert ledger.day(1001).deferred[-1].startswith(f"{task} until ")
