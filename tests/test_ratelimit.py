from __future__ import annotations

import pytest
from requests.structures import CaseInsensitiveDict

from airflow_provider_exactonline.exceptions import ExactOnlineRateLimitExceeded
from airflow_provider_exactonline.ratelimit import (
    RATE_LIMIT_MARGIN,
    LocalRateLimiter,
    RateLimitState,
    build_rate_limiter,
)

NOW = 1_700_000_000.0


def _all(daily_remaining: int = 4999, minutely_remaining: int = 59) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "5000",
        "X-RateLimit-Remaining": str(daily_remaining),
        "X-RateLimit-Reset": "1700006400000",
        "X-RateLimit-Minutely-Limit": "60",
        "X-RateLimit-Minutely-Remaining": str(minutely_remaining),
        "X-RateLimit-Minutely-Reset": "1700000040000",
    }


def test_all_six_headers_in_epoch_milliseconds():
    state = RateLimitState()
    state.update_from_headers(CaseInsensitiveDict(_all()))
    assert state == RateLimitState(5000, 4999, 1_700_006_400.0, 60, 59, 1_700_000_040.0)


def test_headers_are_case_insensitive_even_in_plain_dicts():
    state = RateLimitState()
    state.update_from_headers({k.lower(): v for k, v in _all().items()})
    assert state.daily_remaining == 4999 and state.minutely_reset == 1_700_000_040.0


def test_429_headers_update_only_the_minutely_window():
    state = RateLimitState()
    state.update_from_headers(_all(daily_remaining=10))
    state.update_from_headers({k: v for k, v in _all(minutely_remaining=0).items() if "Minutely" in k})
    assert state.daily_remaining == 10 and state.minutely_remaining == 0


def test_missing_or_garbage_headers_mean_unknown():
    state = RateLimitState()
    state.update_from_headers({})
    assert state == RateLimitState()
    state.update_from_headers({"X-RateLimit-Minutely-Remaining": "lots", "X-RateLimit-Minutely-Reset": ""})
    assert state.minutely_remaining is None
    assert state.minutely_wait(NOW) == 0 and not state.daily_exhausted(NOW)


def test_minutely_wait_until_reset_plus_margin():
    state = RateLimitState()
    state.update_from_headers(_all(minutely_remaining=0))
    assert state.minutely_wait(NOW, margin=1.0) == 41.0
    assert state.minutely_wait(NOW + 40.5) == 0.0  # reset passed: go
    state.update_from_headers(_all(minutely_remaining=1))
    assert state.minutely_wait(NOW) == 0.0


def test_daily_exhausted_only_before_its_reset():
    state = RateLimitState()
    state.update_from_headers(_all(daily_remaining=0))
    assert state.daily_exhausted(NOW)
    assert not state.daily_exhausted(1_700_006_400.0)


# ---------------------------------------------------------------- the limiter seam


class _Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_local_limiter_keeps_one_state_per_division():
    clock = _Clock()
    limiter = LocalRateLimiter(clock)
    limiter.after_call(1, _all(minutely_remaining=0), 200)
    limiter.after_call(2, _all(minutely_remaining=30), 200)
    limiter.before_call(2)  # division 2 still has budget: no wait
    assert clock.sleeps == []
    limiter.before_call(1, purpose="write")  # division 1 is spent until the reset at NOW + 40 s
    assert clock.sleeps == [41.0]
    assert limiter.state(2).minutely_remaining == 30 and limiter.state(None) == RateLimitState()


def test_local_limiter_raises_daily_before_the_call_and_after_a_429():
    clock = _Clock()
    limiter = LocalRateLimiter(clock)
    limiter.after_call(7, _all(daily_remaining=0), 200)
    with pytest.raises(ExactOnlineRateLimitExceeded) as info:
        limiter.before_call(7)
    assert info.value.scope == "daily" and info.value.reset_at == 1_700_006_400.0
    with pytest.raises(ExactOnlineRateLimitExceeded) as after_429:
        limiter.wait_after_429(7, {})
    assert after_429.value.status_code == 429 and "resets at" in str(after_429.value)
    limiter.before_call(8)  # another division is not affected


def test_wait_after_429_uses_the_minutely_reset_or_the_next_whole_minute():
    clock = _Clock()
    limiter = LocalRateLimiter(clock)
    minutely = {k: v for k, v in _all(minutely_remaining=0).items() if "Minutely" in k}
    limiter.after_call(1, minutely, 429)
    assert limiter.wait_after_429(1, minutely) == 41.0  # reset NOW + 40 s, plus the 1 s margin
    clock.now = 1_700_000_030.0
    assert limiter.wait_after_429(2, {}) == 60.0 - (clock.now % 60.0) + RATE_LIMIT_MARGIN


def test_build_rate_limiter_is_local_for_now():
    limiter = build_rate_limiter(None, {}, clock=_Clock())
    assert isinstance(limiter, LocalRateLimiter)


def test_budget_reserve_is_validated_and_holds_reads_back_locally():
    from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

    with pytest.raises(ExactOnlineConfigError, match="budget_reserve"):
        build_rate_limiter(None, {"budget_reserve": "0.9"}, clock=_Clock())
    limiter = build_rate_limiter(None, {"budget_reserve": 0.2}, clock=_Clock())
    assert isinstance(limiter, LocalRateLimiter) and limiter.reserve == 0.2
    limiter.after_call(7, _all(daily_remaining=1000), 200)  # 1000 left = 20 % of 5000: the reserve
    with pytest.raises(ExactOnlineRateLimitExceeded, match="reserve"):
        limiter.before_call(7)
    limiter.before_call(7, purpose="write")
    limiter.before_call(7, purpose="admin")


def test_local_share_caps_calls_per_whole_minute():
    clock = _Clock(NOW)  # 20 s into a minute
    limiter = LocalRateLimiter(clock)
    limiter.share = 3
    for _ in range(3):
        limiter.before_call(7)
    assert clock.sleeps == []
    limiter.before_call(7)
    assert clock.sleeps == [60.0 - NOW % 60 + RATE_LIMIT_MARGIN]
    limiter.before_call(8)  # another division has its own count
    assert len(clock.sleeps) == 1
