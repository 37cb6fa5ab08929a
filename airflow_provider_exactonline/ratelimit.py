"""Exact Online's rate-limit headers, kept per hook.

Exact sends six headers on every API answer (resets are UTC epoch **milliseconds**)::

    X-RateLimit-Limit / -Remaining / -Reset                   daily budget (per app, per division)
    X-RateLimit-Minutely-Limit / -Remaining / -Reset          per-minute budget; reset on the whole minute

A 429 carries only the minutely headers, and some 429s carry none. A missing or unreadable header
means "unknown", never 0, and a known value is forgotten once its reset time has passed.

The state is per process (per hook). Exact counts per division across *all* callers, so other
workers, DAGs or apps sharing the division spend the same budget without this process seeing it:
the pre-call wait keeps one worker inside the limit, and waiting on a 429 is the safety net for
the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

    def daily_exhausted(self, now: float) -> bool:
        """True only when Exact said 0 remaining and the reset is still ahead."""
        return (
            self.daily_remaining is not None
            and self.daily_remaining <= 0
            and (self.daily_reset is not None and self.daily_reset > now)
        )

    def minutely_wait(self, now: float, margin: float = 0.0) -> float:
        """Seconds to wait before the next call so as not to hit the per-minute limit (0 = go)."""
        if self.minutely_remaining is None or self.minutely_remaining > 0 or self.minutely_reset is None:
            return 0.0
        wait = self.minutely_reset - now
        return wait + margin if wait > 0 else 0.0
