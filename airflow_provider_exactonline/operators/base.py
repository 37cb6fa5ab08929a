"""What every Exact Online operator shares: the hook, division parsing, storage paths, asset URIs, and
the day's budget check around ``execute`` (see :mod:`airflow_provider_exactonline.budget.planner`)."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_exactonline.config import DEFAULT_CONN_ID
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

if TYPE_CHECKING:
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

ASSET_SCHEME = "x-exactonline"
DEFAULT_EXPORT_DIRNAME = "exactonline-exports"


# ---------------------------------------------------------------------------------------------- helpers


def default_base_path() -> str:
    """Where exports go when no ``path`` is given.

    ``[exactonline] export_path`` in airflow.cfg (env ``AIRFLOW__EXACTONLINE__EXPORT_PATH``), else
    ``file://$AIRFLOW_HOME/exactonline-exports``.
    """
    try:
        from airflow.sdk.configuration import conf

        configured = conf.get("exactonline", "export_path", fallback=None)
    except Exception:
        configured = os.environ.get("AIRFLOW__EXACTONLINE__EXPORT_PATH")
    if configured:
        return str(configured)
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"file://{os.path.abspath(home)}/{DEFAULT_EXPORT_DIRNAME}"


def to_storage_path(path: str | ObjectStoragePath | os.PathLike[str], conn_id: str | None = None) -> ObjectStoragePath:
    """``str``/``PathLike`` -> ObjectStoragePath; a bare local path becomes ``file://``."""
    if isinstance(path, ObjectStoragePath):
        return path
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if "://" not in text:
        text = "file://" + os.path.abspath(os.path.expanduser(text))
    return ObjectStoragePath(text, conn_id=conn_id)


def resolve_spec(entity: str) -> Any:
    """The catalog entry for ``entity``, or None for a raw path (``/...``) the catalog lacks."""
    from airflow_provider_exactonline import catalog

    return catalog.resolve(entity).spec


def asset_uri(conn_id: str, entity: str) -> str:
    """``x-exactonline://{conn_id}/{service}/{Entity}`` (one Asset per entity and connection)."""
    return f"{ASSET_SCHEME}://{conn_id}/{entity.strip('/')}"


def parse_divisions(value: Any) -> list[int] | str | None:
    """``3`` / ``"3"`` / ``[1, 2]`` / ``"1,2"`` / ``"[1, 2]"`` / ``"all"`` / None -> list, ``"all"`` or None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "all":
            return "all"
        value = json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Iterable):
        raise ExactOnlineConfigError(f"divisions={value!r}: give a division number, a list of them, or 'all'")
    result: list[int] = []
    for item in value:
        if isinstance(item, Mapping):  # a system/Divisions record
            item = item.get("Code")
        try:
            number = int(str(item).strip())
        except ValueError:
            raise ExactOnlineConfigError(f"divisions: {item!r} is not a division number") from None
        if number <= 0:
            raise ExactOnlineConfigError(f"divisions: {item!r} is not a division number")
        if number not in result:
            result.append(number)
    return result


def list_divisions(hook: Any, *, include_blocked: bool = False) -> list[int]:
    """Division numbers (``Code``) the connection's user can reach, via ``system/Divisions``."""
    numbers: list[int] = []
    for record in hook.divisions():
        if not include_blocked and record.get("Blocked"):
            continue
        code = record.get("Code")
        if code is not None and int(code) not in numbers:
            numbers.append(int(code))
    return numbers


def parse_division(value: Any) -> int | None:
    """A templated ``division`` (``1001``, ``"1001"``, ``""``, None) -> int, or None for "the connection's"."""
    if value in (None, ""):
        return None
    return int(str(value))


def try_number_of(context: Mapping[str, Any]) -> int:
    ti = context.get("ti") or context.get("task_instance")
    try:
        return int(getattr(ti, "try_number", 1) or 1)
    except (TypeError, ValueError):
        return 1


#: Operators whose calls are writes (they may use the day's reserve), by class name.
WRITE_OPERATORS = frozenset({"ExactOnlineUpsertOperator"})


def _budget_guarded(execute: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(execute)
    def guarded(self: _ExactOnlineBase, context: Any, *args: Any, **kwargs: Any) -> Any:
        return self._within_budget(execute, context, *args, **kwargs)

    guarded._exactonline_budget = True  # type: ignore[attr-defined]
    return guarded


class _ExactOnlineBase(BaseOperator):
    """Every subclass's ``execute`` runs inside the day's budget check: before the first call, a task
    whose last run cost more than what reads may still use today (the rest of the day minus the
    reserve) is deferred until Exact's daily reset (a ``DateTimeTrigger`` when ``deferrable``, else
    rescheduled); a read refused mid-run because the day is down to the reserve defers the same way.
    ``plan_budget=False`` turns it off for one task; ``deferrable=True`` waits in the triggerer."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        execute = cls.__dict__.get("execute")
        if execute is not None and not getattr(execute, "_exactonline_budget", False):
            cls.execute = _budget_guarded(execute)  # type: ignore[method-assign]

    def __init__(
        self,
        *,
        exactonline_conn_id: str = DEFAULT_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        plan_budget: bool = True,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.exactonline_conn_id = exactonline_conn_id
        self.hook_params = hook_params or {}
        self.plan_budget = plan_budget
        self.deferrable = deferrable

    def _budget_division(self) -> int | None:
        divisions = getattr(self, "divisions", None)
        try:
            parsed = parse_divisions(divisions) if divisions is not None and not callable(divisions) else None
        except (ExactOnlineConfigError, ValueError, TypeError):
            parsed = None  # execute reports a bad value in its own words
        if isinstance(parsed, list) and len(parsed) == 1:
            return parsed[0]
        try:
            return parse_division(getattr(self, "division", None))
        except (ValueError, TypeError):
            return None

    def _budget_purpose(self) -> str:
        method = str(getattr(self, "method", "GET")).upper()
        return "write" if method != "GET" or type(self).__name__ in WRITE_OPERATORS else "read"

    def _within_budget(self, execute: Callable[..., Any], context: Any, *args: Any, **kwargs: Any) -> Any:
        from airflow_provider_exactonline.budget import ledger, planner
        from airflow_provider_exactonline.exceptions import ExactOnlineRateLimitExceeded

        key = ledger.task_key(context) if self.plan_budget else None
        if key is None:
            return execute(self, context, *args, **kwargs)
        hook = self.hook
        division = self._budget_division()
        division = hook.division if division is None else division
        check = None
        if self._budget_purpose() == "read":
            try:
                check = planner.ensure_budget(hook, key, division)
            except planner.ExactOnlineBudgetDeferred as deferred:
                self._wait_for_reset(deferred, context)
        if check is not None and check.estimate is not None:
            self.log.info(
                "Exact Online budget: %s needs about %d calls; %s left today for reads",
                key,
                check.estimate,
                check.budget.for_reads if check.budget.for_reads is not None else "unknown",
            )
        before = hook.api_calls
        try:
            result = execute(self, context, *args, **kwargs)
        except planner.ExactOnlineBudgetDeferred:
            raise
        except ExactOnlineRateLimitExceeded as spent:
            if spent.scope != "daily":
                raise
            spent_calls = hook.api_calls - before
            last = check.estimate if check is not None else None
            planner.record_cost(hook, key, max(spent_calls, last or 0), division)  # a lower bound
            reason = f"a read would have used the reserve after {spent_calls} calls ({spent.message})"
            resume_at = (spent.reset_at or planner.next_utc_midnight(hook.clock.time())) + 1.0
            self._wait_for_reset(planner.deferral(hook, key, division, resume_at, reason), context)
        planner.record_cost(hook, key, hook.api_calls - before, division)
        return result

    def _wait_for_reset(self, deferred: Any, context: Any) -> None:
        """Defer (``deferrable``) or reschedule the task until ``deferred.reset_at``; never returns."""
        from airflow.exceptions import AirflowRescheduleException

        moment = dt.datetime.fromtimestamp(deferred.reset_at, tz=dt.timezone.utc)
        if self.deferrable:
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            self.defer(trigger=DateTimeTrigger(moment=moment), method_name="resume_after_budget_reset")
        raise AirflowRescheduleException(reschedule_date=moment) from deferred

    def resume_after_budget_reset(self, context: Any, event: Any = None) -> Any:
        """Back from the triggerer after the daily reset: run (and check) again."""
        from airflow.sdk.bases.operator import ExecutorSafeguard

        token = ExecutorSafeguard.tracker.set(self)  # called by the task runner, like execute itself
        try:
            return self.execute(context)
        finally:
            ExecutorSafeguard.tracker.reset(token)

    @cached_property
    def hook(self) -> ExactOnlineHook:
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        return ExactOnlineHook(self.exactonline_conn_id, **self.hook_params)


class _DivisionOperatorBase(_ExactOnlineBase):
    """An operator that calls one division: ``division`` (templated) or the connection's."""

    def __init__(self, *, division: int | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.division = division

    def _division(self) -> int | None:
        return parse_division(self.division)
