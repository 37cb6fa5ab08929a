"""The fake's rate limits (per app and division, per minute and day) and the error budget per endpoint."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from airflow_provider_exactonline.testing.http import Response, error_response, utc_text

if TYPE_CHECKING:
    from airflow_provider_exactonline.testing.server import FakeExactOnline

ERROR_STATUSES = {400, 401, 403, 404}


def endpoint_key(resource: str) -> str:
    """The error budget's endpoint: the resource path without key or ``/$count``, lower-cased."""
    first = resource.split("(")[0].lower()
    return first[: -len("/$count")] if first.endswith("/$count") else first


class RateLimiter:
    """Usage counters of one fake; reads the limits from ``fake``. Callers hold ``fake._lock``."""

    def __init__(self, fake: FakeExactOnline) -> None:
        self.fake = fake
        self.responses_429 = 0
        self._rate: dict[tuple[str, int], dict[str, int]] = {}
        self._errors: dict[tuple[str, int, str], deque[float]] = {}
        self._blocked_until: dict[tuple[str, int, str], float] = {}

    def reset(self) -> None:
        self.responses_429 = 0
        self._rate.clear()
        self._errors.clear()
        self._blocked_until.clear()

    def state(self, client: str, division: int, now: float) -> dict[str, int]:
        state = self._rate.setdefault((client, division), {"day": -1, "daily_used": 0, "minute": -1, "minute_used": 0})
        day, minute = int(now // 86_400), int(now // 60)
        if state["day"] != day:
            state["day"], state["daily_used"] = day, 0
        if state["minute"] != minute:
            state["minute"], state["minute_used"] = minute, 0
        return state

    def headers(self, state: dict[str, int], daily: bool = True, minutely: bool = True) -> list[tuple[str, str]]:
        fake = self.fake
        out: list[tuple[str, str]] = []
        if daily and fake.daily_limit is not None:
            out += [
                ("X-RateLimit-Limit", str(fake.daily_limit)),
                ("X-RateLimit-Remaining", str(max(0, fake.daily_limit - state["daily_used"]))),
                ("X-RateLimit-Reset", str((state["day"] + 1) * 86_400_000)),
            ]
        if minutely and fake.minutely_limit is not None:
            out += [
                ("X-RateLimit-Minutely-Limit", str(fake.minutely_limit)),
                ("X-RateLimit-Minutely-Remaining", str(max(0, fake.minutely_limit - state["minute_used"]))),
                ("X-RateLimit-Minutely-Reset", str((state["minute"] + 1) * 60_000)),
            ]
        return out

    def admit(
        self, budget_key: tuple[str, int, str], now: float, headers: Mapping[str, str]
    ) -> tuple[dict[str, int], Response | None]:
        """Count one call; returns the usage state and the refusal (403 blocked, 429) if any."""
        client, division, _ = budget_key
        blocked = self._blocked_until.get(budget_key)
        state = self.state(client, division, now)
        if blocked is not None and now < blocked:
            return state, error_response(
                403,
                f"Too many errors on this endpoint: it is blocked for your app until {utc_text(blocked)}.",
                headers,
                reason="TooManyErrors",
            )
        fake = self.fake
        if fake.daily_limit is not None and state["daily_used"] >= fake.daily_limit:
            self.responses_429 += 1
            response = error_response(429, "API rate limit exceeded (daily).", headers)
            response.headers += self.headers(state, daily=True, minutely=False)
            return state, response
        if fake.minutely_limit is not None and state["minute_used"] >= fake.minutely_limit:
            self.responses_429 += 1
            response = error_response(429, "API rate limit exceeded.", headers)
            response.headers += self.headers(state, daily=False, minutely=True)
            return state, response
        state["daily_used"] += 1
        state["minute_used"] += 1
        return state, None

    def record_outcome(self, budget_key: tuple[str, int, str], status: int, now: float) -> None:
        """Count an error against the endpoint's budget; block the endpoint for an hour when it is spent."""
        budget = self.fake.error_budget
        if budget is None or status not in ERROR_STATUSES:
            return
        errors = self._errors.setdefault(budget_key, deque())
        errors.append(now)
        while errors and errors[0] <= now - 3600:
            errors.popleft()
        if len(errors) >= budget:
            self._blocked_until[budget_key] = now + 3600
            errors.clear()
