"""Today's API budget per division, for ``airflow-exactonline status`` and the UI page (via health.py).

Read from the ledger the workers keep (:mod:`.ledger`): Redis when the connection names
``budget_redis_conn_id``, else the Airflow Variable. The keys of each entry are a contract with the UI
page: ``division``, ``calls_today``, ``remaining_today``, ``limit_today``, ``resets_at_iso``,
``reserve``, ``deferred``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_exactonline.budget.ledger import DayBudget, DocumentLedger, Ledger, RedisLedger
from airflow_provider_exactonline.ratelimit import BUDGET_REDIS_EXTRA, budget_reserve

log = logging.getLogger(__name__)


class _FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:  # never used by the report
        pass


def budget_entry(budget: DayBudget) -> dict[str, Any]:
    resets = budget.reset
    return {
        "division": int(budget.division),
        "calls_today": budget.calls_today,
        "remaining_today": budget.remaining,
        "limit_today": budget.limit,
        "resets_at_iso": None
        if resets is None
        else datetime.fromtimestamp(resets, tz=timezone.utc).isoformat(timespec="seconds"),
        "reserve": budget.reserve,
        "deferred": list(budget.deferred),
    }


def open_ledger(extras: Mapping[str, Any], client_id: str, now: float) -> Ledger:
    """The ledger of the connection as an ORM process (api-server, CLI) sees it."""
    clock = _FixedClock(now)
    try:
        reserve = budget_reserve(extras)
    except Exception:
        reserve = 0.10
    redis_conn_id = str(extras.get(BUDGET_REDIS_EXTRA) or "").strip()
    if redis_conn_id:
        from airflow_provider_exactonline.budget.redis_limiter import redis_client_factory

        return RedisLedger(redis_client_factory(redis_conn_id)(), client_id, clock, reserve)
    from airflow_provider_exactonline.auth.variable_store import _variables

    return DocumentLedger(client_id, clock, reserve, variables=_variables())


def budget_report(
    extras: Mapping[str, Any], client_id: str | None, division: int | None, *, now: float | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per division today's budget (the connection's division first), and warnings when it cannot be read."""
    if not client_id:
        return [], []
    now = time.time() if now is None else now
    try:
        ledger = open_ledger(extras, client_id, now)
        divisions = ledger.divisions()
        ordered = ([division] if division is not None else []) + [d for d in divisions if d != division]
        return [budget_entry(ledger.day(d)) for d in ordered], []
    except Exception as err:
        log.debug("Exact Online budget report unavailable: %s", type(err).__name__)
        where = "Redis" if extras.get(BUDGET_REDIS_EXTRA) else "the budget Variable"
        return [], [f"today's API budget could not be read from {where} ({type(err).__name__})"]
