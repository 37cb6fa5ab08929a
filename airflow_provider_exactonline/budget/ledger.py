"""The day's quota per (app, division, UTC day): what Exact says is left, what each task costs, what
was deferred.

Two stores behind one :class:`Ledger`:

* :class:`RedisLedger` when the connection names ``budget_redis_conn_id``. The day's counters are the
  shared limiter's ``...:day`` hash, corrected from ``X-RateLimit-Remaining``/``-Reset`` of every answer
  (see :mod:`.redis_limiter`); costs and deferred work sit next to it.
* :class:`DocumentLedger` otherwise: one JSON document per app in the Airflow Variable
  ``exactonline_budget__<app hash>`` (written when a task starts, finishes or is deferred, not on every
  call), or in this process only when Variables cannot be used (a plain script without a metadata DB).
  Variables have no compare-and-swap, so two tasks finishing together may lose one cost record; it
  is an estimate, and the limiter still holds the reserve on every call.

Keys of the costs: ``dag_id.task_id`` plus ``.map_index`` for mapped tasks (:func:`task_key`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_exactonline.budget.redis_limiter import app_key, budget_keys, division_key
from airflow_provider_exactonline.ratelimit import RateLimitState, reserve_calls

log = logging.getLogger(__name__)

VARIABLE_PREFIX = "exactonline_budget__"
#: Costs are kept this long (clock seconds) after their last update.
COST_TTL_S = 35 * 86_400
#: Deferred entries shown per division and day (the newest).
MAX_DEFERRED = 50


def utc_day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def task_key(context: Mapping[str, Any]) -> str | None:
    """``dag_id.task_id[.map_index]`` of the running task, or None outside a task."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id, task_id = getattr(ti, "dag_id", None), getattr(ti, "task_id", None)
    if not dag_id or not task_id:
        return None
    map_index = getattr(ti, "map_index", -1)
    suffix = f".{map_index}" if isinstance(map_index, int) and map_index >= 0 else ""
    return f"{dag_id}.{task_id}{suffix}"


@dataclass
class DayBudget:
    """One division's day, as the ledger knows it (None = unknown)."""

    division: int
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # epoch seconds
    reserve: int | None = None
    deferred: list[str] = field(default_factory=list)

    @property
    def calls_today(self) -> int | None:
        if self.limit is None or self.remaining is None:
            return None
        return max(0, self.limit - self.remaining)

    @property
    def for_reads(self) -> int | None:
        """Calls reads may still make today (the rest of the day minus the reserve)."""
        if self.remaining is None:
            return None
        return max(0, self.remaining - (self.reserve or 0))


class Ledger(Protocol):
    def day(self, division: int) -> DayBudget: ...

    def observe(self, division: int, state: RateLimitState) -> None: ...

    def cost(self, division: int, key: str) -> int | None: ...

    def record_cost(self, division: int, key: str, calls: int) -> None: ...

    def record_deferred(self, division: int, entry: str) -> None: ...

    def divisions(self) -> list[int]: ...


def _fresh(reset: float | None, now: float) -> bool:
    return reset is not None and reset > now


class RedisLedger:
    """The ledger next to the shared budget in Redis (``client`` is a ``redis.Redis``)."""

    def __init__(self, client: Any, client_id: str, clock: Any, reserve: float) -> None:
        self.client = client
        self.client_id = client_id
        self.clock = clock
        self.reserve = reserve

    def _key(self, division: int, name: str) -> str:
        return f"{division_key(self.client_id, division)}:{name}"

    def _divisions_key(self) -> str:
        return f"exactonline:budget:{app_key(self.client_id)}:divisions"

    def day(self, division: int) -> DayBudget:
        now = self.clock.time()
        raw = {_text(k): _text(v) for k, v in self.client.hgetall(budget_keys(self.client_id, division)[1]).items()}
        limit, remaining, reset_ms = (_num(raw.get(name)) for name in ("limit", "remaining", "reset"))
        reset = None if reset_ms is None else reset_ms / 1000.0
        deferred = [_text(v) for v in self.client.lrange(self._key(division, f"deferred:{utc_day(now)}"), 0, -1)]
        budget = DayBudget(division, limit, remaining, reset, reserve_calls(limit, self.reserve), deferred)
        if not _fresh(reset, now):  # yesterday's figures: unknown until Exact answers again
            budget.remaining = None
        return budget

    def observe(self, division: int, state: RateLimitState) -> None:
        """Nothing to store: the limiter corrects the day's counters from every answer."""
        self.client.sadd(self._divisions_key(), division)

    def cost(self, division: int, key: str) -> int | None:
        return _num(self.client.hget(self._key(division, "costs"), key))

    def record_cost(self, division: int, key: str, calls: int) -> None:
        self.client.hset(self._key(division, "costs"), key, int(calls))
        self.client.expire(self._key(division, "costs"), COST_TTL_S)
        self.client.sadd(self._divisions_key(), division)

    def record_deferred(self, division: int, entry: str) -> None:
        key = self._key(division, f"deferred:{utc_day(self.clock.time())}")
        self.client.lpush(key, entry)
        self.client.ltrim(key, 0, MAX_DEFERRED - 1)
        self.client.expire(key, 2 * 86_400)
        self.client.sadd(self._divisions_key(), division)

    def divisions(self) -> list[int]:
        return sorted(int(_text(v)) for v in self.client.smembers(self._divisions_key()))


class DocumentLedger:
    """The ledger as one JSON document: in an Airflow Variable (``variables`` has ``get``/``set``), or
    in this process (``variables=None``)."""

    def __init__(self, client_id: str, clock: Any, reserve: float, variables: Any = None) -> None:
        self.key = VARIABLE_PREFIX + app_key(client_id)
        self.clock = clock
        self.reserve = reserve
        self.variables = variables
        self._memory: dict[str, Any] = {"divisions": {}}

    def _load(self) -> dict[str, Any]:
        if self.variables is None:
            return self._memory
        try:
            raw = self.variables.get(self.key)
            document = json.loads(raw) if raw else {}
        except Exception as err:  # an unreadable ledger is an empty one, never a task error
            log.warning("Exact Online budget ledger %s unreadable (%s); starting afresh", self.key, type(err).__name__)
            document = {}
        document.setdefault("divisions", {})
        return document

    def _save(self, document: dict[str, Any]) -> None:
        if self.variables is None:
            self._memory = document
            return
        try:
            self.variables.set(self.key, json.dumps(document, sort_keys=True))
        except Exception as err:
            log.warning("Exact Online budget ledger %s not saved (%s)", self.key, type(err).__name__)

    def _division(self, document: dict[str, Any], division: int) -> dict[str, Any]:
        entry = document["divisions"].setdefault(str(division), {})
        today = utc_day(self.clock.time())
        if entry.get("day") != today:
            entry.update(day=today, deferred=[])
        entry.setdefault("costs", {})
        return entry

    def day(self, division: int) -> DayBudget:
        entry = self._division(self._load(), division)
        limit, reset = entry.get("limit"), entry.get("reset")
        remaining = entry.get("remaining") if _fresh(reset, self.clock.time()) else None
        return DayBudget(division, limit, remaining, reset, reserve_calls(limit, self.reserve), list(entry["deferred"]))

    def observe(self, division: int, state: RateLimitState) -> None:
        if state.daily_remaining is None or not _fresh(state.daily_reset, self.clock.time()):
            return
        document = self._load()
        entry = self._division(document, division)
        entry.update(limit=state.daily_limit, remaining=state.daily_remaining, reset=state.daily_reset)
        self._save(document)

    def cost(self, division: int, key: str) -> int | None:
        value = self._division(self._load(), division)["costs"].get(key)
        return None if value is None else int(value)

    def record_cost(self, division: int, key: str, calls: int) -> None:
        document = self._load()
        self._division(document, division)["costs"][key] = int(calls)
        self._save(document)

    def record_deferred(self, division: int, entry: str) -> None:
        document = self._load()
        deferred = self._division(document, division)["deferred"]
        deferred.insert(0, entry)
        del deferred[MAX_DEFERRED:]
        self._save(document)

    def divisions(self) -> list[int]:
        return sorted(int(d) for d in self._load()["divisions"])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _num(value: Any) -> int | None:
    if value is None or value == "":
        return None
    with contextlib.suppress(TypeError, ValueError):
        return int(float(_text(value)))
    return None
