from __future__ import annotations

from requests.structures import CaseInsensitiveDict

from airflow_provider_exactonline.ratelimit import RateLimitState

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
