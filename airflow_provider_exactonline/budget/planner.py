"""Plan a task against the day's quota: start it only if the rest of the day (minus the reserve) covers
what it cost last time; otherwise defer it until Exact's daily reset instead of failing halfway.

``check_budget`` says whether it fits, ``ensure_budget`` raises :class:`ExactOnlineBudgetDeferred` when it
does not (and records the deferral in the ledger, so ``airflow-exactonline status`` and the UI page show
it), ``record_cost`` stores what the task spent. The Exact operators call them around ``execute``
(operators/base.py); ``@task`` code can call them around its own hook calls.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from airflow_provider_exactonline.budget.ledger import DayBudget, DocumentLedger, Ledger, RedisLedger
from airflow_provider_exactonline.exceptions import ExactOnlineRateLimitExceeded
from airflow_provider_exactonline.ratelimit import RATE_LIMIT_MARGIN, RateLimitState, reserve_calls

log = logging.getLogger(__name__)
T = TypeVar("T")


class ExactOnlineBudgetDeferred(ExactOnlineRateLimitExceeded):
    """The day's remaining calls (minus the reserve) cannot cover this task: run it after ``reset_at``."""

    def __init__(self, message: str, *, reset_at: float, task: str, division: int | None, **kwargs: Any) -> None:
        super().__init__(message, scope="daily", reset_at=reset_at, **kwargs)
        self.task = task
        self.division = division


@dataclass
class BudgetCheck:
    task: str
    division: int
    estimate: int | None  # calls the task needed last time (None: never ran)
    budget: DayBudget

    @property
    def fits(self) -> bool:
        available = self.budget.for_reads
        return self.estimate is None or available is None or self.estimate <= available

    @property
    def resume_at(self) -> float:
        """Just after the daily reset (the next UTC midnight when Exact has not said)."""
        return (self.budget.reset or next_utc_midnight(time.time())) + RATE_LIMIT_MARGIN


def next_utc_midnight(now: float) -> float:
    day = time.gmtime(now)
    return calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)) + 86_400.0


def iso_utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def ledger_for(hook: Any) -> Ledger:
    """The hook's ledger (kept on the hook): Redis next to the shared budget, else a Variable, else memory."""
    cached = getattr(hook, "_budget_ledger", None)
    if cached is not None:
        return cached
    from airflow_provider_exactonline.budget.redis_limiter import RedisRateLimiter

    limiter = hook.rate_limiter
    ledger: Ledger | None = None
    if isinstance(limiter, RedisRateLimiter):
        client = limiter._redis()
        if client is not None:
            ledger = RedisLedger(client, limiter.client_id, hook.clock, limiter.reserve)
    if ledger is None:
        reserve = getattr(limiter, "reserve", 0.0)
        ledger = DocumentLedger(hook.config.client_id, hook.clock, reserve, variables=_usable_variables())
    hook._budget_ledger = ledger
    return ledger


def _usable_variables() -> Any:
    """Airflow Variables if this process can read them, else None (the ledger stays in memory)."""
    try:
        from airflow_provider_exactonline.auth.variable_store import _variables

        variables = _variables()
        variables.get("exactonline_budget__probe")
        return variables
    except Exception as err:
        log.info("Exact Online budget ledger kept in this process (Variables unavailable: %s)", type(err).__name__)
        return None


def _division(hook: Any, division: int | None) -> int | None:
    return division if division is not None else hook.division


def check_budget(hook: Any, task: str, division: int | None = None) -> BudgetCheck | None:
    """Does ``task`` fit in what is left of the day? None when there is no division to plan for."""
    division = _division(hook, division)
    if division is None:
        return None
    try:
        ledger = ledger_for(hook)
        budget = ledger.day(division)
        estimate = ledger.cost(division, task)
    except Exception as err:  # the ledger is an aid: without it the limiter still guards every call
        log.warning("Exact Online budget: ledger unavailable (%s); %s starts unplanned", type(err).__name__, task)
        return None
    state: RateLimitState = hook.rate_limiter.state(division)
    now = hook.clock.time()
    if state.daily_remaining is not None and state.daily_reset is not None and state.daily_reset > now:
        # This process's own view is the freshest (the ledger may be a Variable written at task ends).
        stale = budget.remaining is None or budget.reset is None or budget.reset < state.daily_reset
        if stale or state.daily_remaining < budget.remaining:  # type: ignore[operator]
            budget.remaining, budget.reset = state.daily_remaining, state.daily_reset
            budget.limit = state.daily_limit or budget.limit
            budget.reserve = reserve_calls(budget.limit, getattr(hook.rate_limiter, "reserve", 0.0))
    return BudgetCheck(task, division, estimate, budget)


def ensure_budget(hook: Any, task: str, division: int | None = None) -> BudgetCheck | None:
    """:func:`check_budget`, raising :class:`ExactOnlineBudgetDeferred` when the task does not fit."""
    check = check_budget(hook, task, division)
    if check is None or check.fits:
        return check
    reason = (
        f"needs about {check.estimate} calls (its last run), but only {check.budget.for_reads} of the "
        f"{check.budget.remaining} calls left today may be used for reads ({check.budget.reserve} are kept "
        "for writes, Test and Connect)"
    )
    raise deferral(hook, task, check.division, check.resume_at, reason)


def deferral(hook: Any, task: str, division: int | None, resume_at: float, reason: str) -> ExactOnlineBudgetDeferred:
    """Record ``task`` as deferred until ``resume_at`` and return the typed error saying so."""
    when = iso_utc(resume_at)
    entry = f"{task} until {when}: {reason}"
    if division is not None:
        try:
            ledger = ledger_for(hook)
            ledger.observe(division, hook.rate_limiter.state(division))
            ledger.record_deferred(division, entry)
        except Exception as err:  # recording is for the report; never fail the task over it
            log.warning("Exact Online budget: deferral of %s not recorded (%s)", task, type(err).__name__)
    message = (
        f"Exact Online daily budget of division {division}: {task} deferred until {when} (the daily reset): {reason}"
    )
    log.warning("%s", message)
    return ExactOnlineBudgetDeferred(message, reset_at=resume_at, task=task, division=division)


def record_cost(hook: Any, task: str, calls: int, division: int | None = None) -> None:
    """Store what ``task`` spent (its next run's estimate) and the day's figures this process saw."""
    division = _division(hook, division)
    if division is None:
        return
    try:
        ledger = ledger_for(hook)
        ledger.observe(division, hook.rate_limiter.state(division))
        ledger.record_cost(division, task, calls)
    except Exception as err:
        log.warning("Exact Online budget: cost of %s not recorded (%s)", task, type(err).__name__)


def run_within_budget(hook: Any, task: str, work: Callable[[], T], division: int | None = None) -> T:
    """Run ``work`` (reads through ``hook``) only if today's budget covers ``task``'s last cost, and record
    what it spent. Over budget, before it starts or when a read reaches the reserve mid-run, the task is
    rescheduled to just after the daily reset (``AirflowRescheduleException``): for ``@task`` code, such as
    the mirror DAG's tasks, that has no operator around it."""
    from airflow.exceptions import AirflowRescheduleException

    def reschedule(deferred: ExactOnlineBudgetDeferred) -> AirflowRescheduleException:
        moment = datetime.fromtimestamp(deferred.reset_at or next_utc_midnight(time.time()), tz=timezone.utc)
        return AirflowRescheduleException(reschedule_date=moment)

    try:
        check = ensure_budget(hook, task, division)
    except ExactOnlineBudgetDeferred as deferred:
        raise reschedule(deferred) from deferred
    before = hook.api_calls
    try:
        result = work()
    except ExactOnlineRateLimitExceeded as spent:
        if spent.scope != "daily" or isinstance(spent, ExactOnlineBudgetDeferred):
            raise
        spent_calls = hook.api_calls - before
        last = check.estimate if check is not None else None
        record_cost(hook, task, max(spent_calls, last or 0), division)  # a lower bound
        resume_at = (spent.reset_at or next_utc_midnight(hook.clock.time())) + RATE_LIMIT_MARGIN
        reason = f"a read would have used the reserve after {spent_calls} calls ({spent.message})"
        raise reschedule(deferral(hook, task, division, resume_at, reason)) from spent
    record_cost(hook, task, hook.api_calls - before, division)
    return result
