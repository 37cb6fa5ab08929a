"""Rate limits (minutely/daily per client and division), 429s and the hourly error budget."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.testing import FakeExactOnline

from .conftest import api_session

ALL_HEADERS = {
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Minutely-Limit",
    "X-RateLimit-Minutely-Remaining",
    "X-RateLimit-Minutely-Reset",
}


@pytest.fixture
def limited(clock: ScaledClock) -> Iterator[FakeExactOnline]:
    # Start 5 s into a minute so a test's calls stay inside one minutely window.
    clock.advance(65 - clock.time() % 60)
    with FakeExactOnline(clock=clock, mandatory_filtering=False, minutely_limit=5, daily_limit=8) as fake:
        yield fake


def test_headers_on_every_response(limited: FakeExactOnline, clock: ScaledClock) -> None:
    session = api_session(limited.issue_tokens()["access_token"])
    response = session.get(limited.api_url("crm/Accounts"))
    assert set(response.headers) >= ALL_HEADERS
    assert response.headers["X-RateLimit-Limit"] == "8"
    assert response.headers["X-RateLimit-Remaining"] == "7"
    assert response.headers["X-RateLimit-Minutely-Limit"] == "5"
    assert response.headers["X-RateLimit-Minutely-Remaining"] == "4"
    now_ms = clock.time() * 1000
    minutely_reset = int(response.headers["X-RateLimit-Minutely-Reset"])
    daily_reset = int(response.headers["X-RateLimit-Reset"])
    assert minutely_reset % 60_000 == 0 and 0 < minutely_reset - now_ms <= 60_000
    assert daily_reset % 86_400_000 == 0 and 0 < daily_reset - now_ms <= 86_400_000
    # Errors carry the headers too, and count.
    error = session.get(limited.api_url("crm/Nothing"))
    assert error.status_code == 404 and error.headers["X-RateLimit-Minutely-Remaining"] == "3"


def test_minutely_429_carries_only_minutely_headers(limited: FakeExactOnline, clock: ScaledClock) -> None:
    session = api_session(limited.issue_tokens()["access_token"])
    for _ in range(5):
        assert session.get(limited.api_url("crm/Accounts")).status_code == 200
    refused = session.get(limited.api_url("crm/Accounts"))
    assert refused.status_code == 429
    assert {h for h in refused.headers if h.startswith("X-RateLimit")} == {
        "X-RateLimit-Minutely-Limit",
        "X-RateLimit-Minutely-Remaining",
        "X-RateLimit-Minutely-Reset",
    }
    assert refused.headers["X-RateLimit-Minutely-Remaining"] == "0"
    assert refused.json()["error"]["message"]["value"]
    assert limited.responses_429 == 1
    # Another division has its own counter.
    assert session.get(limited.api_url("crm/Accounts", 1002)).status_code == 200
    # The next whole minute resets the minutely counter; 429s did not count against the day.
    clock.advance(int(refused.headers["X-RateLimit-Minutely-Reset"]) / 1000 - clock.time())
    ok = session.get(limited.api_url("crm/Accounts"))
    assert ok.status_code == 200
    assert ok.headers["X-RateLimit-Minutely-Remaining"] == "4"
    assert ok.headers["X-RateLimit-Remaining"] == "2"


def test_daily_limit(limited: FakeExactOnline, clock: ScaledClock) -> None:
    session = api_session(limited.issue_tokens()["access_token"])
    for _ in range(5):
        session.get(limited.api_url("crm/Accounts"))
    clock.advance(60)
    for _ in range(3):
        assert session.get(limited.api_url("crm/Accounts")).status_code == 200
    refused = session.get(limited.api_url("crm/Accounts"))
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert limited.rate_limit_state() == {"minutely_used": 3, "daily_used": 8}
    clock.advance(int(refused.headers["X-RateLimit-Reset"]) / 1000 - clock.time())
    session = api_session(limited.issue_tokens()["access_token"])  # the old access token has expired
    assert session.get(limited.api_url("crm/Accounts")).status_code == 200


def test_me_counts_against_current_division(limited: FakeExactOnline) -> None:
    session = api_session(limited.issue_tokens()["access_token"])
    response = session.get(limited.base_url + "/api/v1/current/Me")
    assert response.headers["X-RateLimit-Minutely-Remaining"] == "4"
    assert limited.rate_limit_state(1001)["minutely_used"] == 1
    assert limited.requests[-1].division == 1001


def test_error_budget_blocks_endpoint_for_an_hour(clock: ScaledClock) -> None:
    with FakeExactOnline(clock=clock, mandatory_filtering=False, error_budget=3, minutely_limit=None) as fake:
        session = api_session(fake.issue_tokens()["access_token"])
        for _ in range(3):
            assert session.get(fake.api_url("crm/Accounts"), params={"$select": "Nope"}).status_code == 400
        blocked = session.get(fake.api_url("crm/Accounts"))
        assert blocked.status_code == 403
        assert "blocked" in blocked.json()["error"]["message"]["value"]
        assert session.get(fake.api_url("crm/Contacts")).status_code == 200  # per endpoint
        clock.advance(3601)
        session = api_session(fake.issue_tokens()["access_token"])
        assert session.get(fake.api_url("crm/Accounts")).status_code == 200


def test_error_budget_off_by_default(fake: FakeExactOnline) -> None:
    session = api_session(fake.issue_tokens()["access_token"])
    for _ in range(12):
        session.get(fake.api_url("crm/Nothing"))
    assert session.get(fake.api_url("crm/Nothing")).status_code == 404


def test_scaled_clock_minute_passes_fast() -> None:
    clock = ScaledClock(scale=120)
    with FakeExactOnline(clock=clock, mandatory_filtering=False, minutely_limit=1) as fake:
        session = api_session(fake.issue_tokens()["access_token"])
        session.get(fake.api_url("crm/Accounts"))
        reset = int(session.get(fake.api_url("crm/Accounts")).headers["X-RateLimit-Minutely-Reset"]) / 1000
        clock.sleep(reset - clock.time() + 0.5)  # at most ~0.5 s of real time
        assert session.get(fake.api_url("crm/Accounts")).status_code == 200
