"""Exact Online's rate limits: the headers, and the limiter every API call goes through.

Exact sends six headers on every API answer (resets are UTC epoch **milliseconds**)::

    X-RateLimit-Limit / -Remaining / -Reset                   daily budget (per app, per division)
    X-RateLimit-Minutely-Limit / -Remaining / -Reset          per-minute budget; reset on the whole minute

A 429 carries only the minutely headers, and some 429s carry none. A missing or unreadable header
means "unknown", never 0, and a known value is forgotten once its reset time has passed.

Exact counts per app **per division** across *all* callers. The hook talks to a
:class:`RateLimiter` (``before_call`` / ``after_call`` / ``wait_after_429``) keyed by division;
:class:`LocalRateLimiter` keeps one :class:`RateLimitState` per division in this process, so
other workers sharing the division spend the same budget without this process seeing it: the
pre-call wait keeps one process inside the limit, and waiting on a 429 is the safety net for the
rest. :func:`build_rate_limiter` is the one place that picks the limiter for a connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from airflow_provider_exactonline.clock import Clock

log = logging.getLogger(__name__)

#: Extra seconds (clock time) slept after a minutely reset, for clock skew with Exact's servers.
RATE_LIMIT_MARGIN = 1.0
#: What a call is for: reads may be held back to keep a reserve for writes and for the
#: interactive Test button / Connect ("admin").
Purpose = Literal["read", "write", "admin"]

DAILY_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
MINUTELY_HEADERS = ("X-RateLimit-Minutely-Limit", "X-RateLimit-Minutely-Remaining", "X-RateLimit-Minutely-Reset")


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        # ``requests`` headers are case-insensitive already; plain dicts (tests, fakes) may not be.
        lowered = name.lower()
        for key, candidate in headers.items():
            if str(key).lower() == lowered:
                value = candidate
                break
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _epoch_ms(value: str | None) -> float | None:
    number = _int(value)
    return None if number is None else number / 1000.0


@dataclass
class RateLimitState:
    """Last seen limits. ``*_reset`` are epoch **seconds** (converted from Exact's milliseconds)."""

    daily_limit: int | None = None
    daily_remaining: int | None = None
    daily_reset: float | None = None
    minutely_limit: int | None = None
    minutely_remaining: int | None = None
    minutely_reset: float | None = None

    def update_from_headers(self, headers: Mapping[str, Any]) -> None:
        """Take whatever of the six headers is present; absent ones keep their last value."""
        limit, remaining, reset = (_header(headers, name) for name in DAILY_HEADERS)
        if remaining is not None or reset is not None:
            self.daily_limit = _int(limit) if limit is not None else self.daily_limit
            self.daily_remaining = _int(remaining)
            self.daily_reset = _epoch_ms(reset)
        limit, remaining, reset = (_header(headers, name) for name in MINUTELY_HEADERS)
        if remaining is not None or reset is not None:
            self.minutely_limit = _int(limit) if limit is not None else self.minutely_limit
            self.minutely_remaining = _int(remaining)
            self.minutely_reset = _epoch_ms(reset)

    def has_minutely_headers(self, headers: Mapping[str, Any]) -> bool:
        return _header(headers, MINUTELY_HEADERS[2]) is not None

    def daily_exhausted(self, now: float, floor: int = 0) -> bool:
        """True only when Exact said at most ``floor`` (the reserve, for reads) remaining and the
        reset is still ahead."""
        return (
            self.daily_remaining is not None
            and self.daily_remaining <= floor
            and (self.daily_reset is not None and self.daily_reset > now)
        )

    def minutely_wait(self, now: float, margin: float = 0.0) -> float:
        """Seconds to wait before the next call so as not to hit the per-minute limit (0 = go)."""
        if self.minutely_remaining is None or self.minutely_remaining > 0 or self.minutely_reset is None:
            return 0.0
        wait = self.minutely_reset - now
        return wait + margin if wait > 0 else 0.0


def reserve_calls(daily_limit: int | None, reserve: float) -> int:
    """The day's calls kept for writes, Test and Connect: ``floor(limit * reserve)`` (0 if unknown)."""
    return int(daily_limit * reserve) if daily_limit else 0


def daily_limit_error(state: RateLimitState, *, reserve: bool = False, **kwargs: Any) -> Any:
    """The typed "day is spent" error (imported lazily: the exceptions module imports Airflow).
    ``reserve``: what is left is the reserve, which reads may not use."""
    from airflow_provider_exactonline.exceptions import ExactOnlineRateLimitExceeded

    reset_at = state.daily_reset
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(reset_at)) if reset_at else "an unknown time"
    what = (
        f"is down to the reserve kept for writes, Test and Connect ({state.daily_remaining} calls left)"
        if reserve
        else "is spent"
    )
    return ExactOnlineRateLimitExceeded(
        f"Exact Online's daily API limit ({state.daily_limit or '?'} calls) for this app and "
        f"division {what}; it resets at {when}. Reschedule the work after the reset.",
        scope="daily",
        reset_at=reset_at,
        **kwargs,
    )


class RateLimiter(Protocol):
    """What the hook asks before and tells after every API call. ``division`` is the division in
    the call's URL (``None`` for division-less calls such as ``current/Me``)."""

    def before_call(self, division: int | None, *, purpose: str = "read") -> None:
        """Sleep (via the clock) until a call may go; raise ``ExactOnlineRateLimitExceeded``
        (``scope="daily"``, ``reset_at``) when the day's budget is spent."""

    def after_call(self, division: int | None, headers: Mapping[str, Any], status: int) -> None:
        """Feed every answer's ``X-RateLimit-*`` headers (also those of errors and 429s)."""

    def wait_after_429(self, division: int | None, headers: Mapping[str, Any]) -> float:
        """Seconds to wait after a 429 (``after_call`` has already seen its headers); raises the
        daily error when the 429 is because the day is spent."""

    def state(self, division: int | None) -> RateLimitState:
        """The last known limits of ``division``."""


class LocalRateLimiter:
    """Per-process limits, one :class:`RateLimitState` per division, waits on ``clock``."""

    def __init__(self, clock: Clock, *, margin: float = RATE_LIMIT_MARGIN, reserve: float = 0.0) -> None:
        self.clock = clock
        self.margin = margin
        self.reserve = reserve
        #: Calls per whole minute this process allows itself (None: no own cap, only Exact's headers).
        #: The shared limiter sets it to its share of the minute when Redis goes away.
        self.share: int | None = None
        self._states: dict[int | None, RateLimitState] = {}
        self._minute_calls: dict[int | None, tuple[int, int]] = {}  # division -> (minute index, calls)

    def state(self, division: int | None) -> RateLimitState:
        return self._states.setdefault(division, RateLimitState())

    def before_call(self, division: int | None, *, purpose: str = "read") -> None:
        state = self.state(division)
        now = self.clock.time()
        if state.daily_exhausted(now, reserve_calls(state.daily_limit, self.reserve) if purpose == "read" else 0):
            raise daily_limit_error(state, reserve=purpose == "read" and (state.daily_remaining or 0) > 0)
        wait = state.minutely_wait(now, self.margin)
        if wait > 0:
            log.info("Exact Online minutely rate limit reached; waiting %.1fs for the reset", wait)
            self.clock.sleep(wait)
            now = self.clock.time()
        if self.share is not None:
            minute, calls = self._minute_calls.get(division, (-1, 0))
            if minute == int(now // 60) and calls >= self.share:
                wait = 60.0 - (now % 60.0) + self.margin
                log.info(
                    "Exact Online: this process's share of the minute (%d calls) is used; waiting %.1fs",
                    self.share,
                    wait,
                )
                self.clock.sleep(wait)
                now = self.clock.time()
        self.count_call(division, now)

    def count_call(self, division: int | None, now: float) -> None:
        """Count a call in this process's whole minute (also the shared limiter's draws, so a fallback
        mid-minute knows what this process has spent of its share)."""
        minute, calls = self._minute_calls.get(division, (-1, 0))
        current = int(now // 60)
        self._minute_calls[division] = (current, calls + 1 if minute == current else 1)

    def after_call(self, division: int | None, headers: Mapping[str, Any], status: int) -> None:
        self.state(division).update_from_headers(headers)

    def wait_after_429(self, division: int | None, headers: Mapping[str, Any]) -> float:
        state = self.state(division)
        now = self.clock.time()
        if state.daily_exhausted(now):
            raise daily_limit_error(state, status_code=429)
        reset = state.minutely_reset if state.has_minutely_headers(headers) else None
        if reset is not None and reset > now:
            return min(reset - now, 61.0) + self.margin
        # No (usable) headers: the minutely window restarts on the whole minute.
        return 60.0 - (now % 60.0) + self.margin


#: Connection extra naming an Airflow Redis connection that holds the shared budget.
BUDGET_REDIS_EXTRA = "budget_redis_conn_id"
BUDGET_RESERVE_EXTRA = "budget_reserve"
#: Share of the day's limit kept for writes, Test and Connect; reads never draw into it.
DEFAULT_RESERVE = 0.10
_warned_no_shared_store = False


def build_rate_limiter(config: Any, conn_extras: Mapping[str, Any], *, clock: Clock) -> RateLimiter:
    """The limiter for one connection (``config`` is its ExactOnlineConfig).

    Extra ``budget_redis_conn_id`` names a Redis connection: every process then draws from one
    budget per (app, division) (:mod:`airflow_provider_exactonline.budget.redis_limiter`). Without
    it: per-process limits, and one warning per process.
    """
    global _warned_no_shared_store
    reserve = budget_reserve(conn_extras)
    redis_conn_id = str(conn_extras.get(BUDGET_REDIS_EXTRA) or "").strip()
    if redis_conn_id:
        from airflow_provider_exactonline.budget.redis_limiter import RedisRateLimiter, redis_client_factory

        return RedisRateLimiter(redis_client_factory(redis_conn_id), config.client_id, clock, reserve=reserve)
    if not _warned_no_shared_store:
        _warned_no_shared_store = True
        log.warning(
            "Exact Online connection %r has no shared API budget (extra %r): rate limits are kept per "
            "process, so parallel tasks on one division may meet HTTP 429s",
            getattr(config, "conn_id", "?"),
            BUDGET_REDIS_EXTRA,
        )
    return LocalRateLimiter(clock, reserve=reserve)


def budget_reserve(conn_extras: Mapping[str, Any]) -> float:
    """Extra ``budget_reserve``: the share (0-0.5) of the day's limit reads leave for writes, Test and
    Connect; default 10 %."""
    raw = conn_extras.get(BUDGET_RESERVE_EXTRA, DEFAULT_RESERVE)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not 0.0 <= value <= 0.5:
        from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

        raise ExactOnlineConfigError(
            f"extra {BUDGET_RESERVE_EXTRA!r} is {raw!r}: give the share of the daily limit kept for writes, "
            "Test and Connect as a number from 0 to 0.5 (e.g. 0.10)"
        )
    return value
