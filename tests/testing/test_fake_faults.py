"""Fault switches: latency, 5xx, dropped connections, slow token endpoint, HTML instead of JSON."""

from __future__ import annotations

import time

import pytest
import requests

from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.testing import FakeExactOnline

from .conftest import refresh


def test_latency(fake: FakeExactOnline, api: requests.Session) -> None:
    fake.set_latency(fixed=0.6, jitter=0.05)
    started = time.perf_counter()
    assert api.get(fake.api_url("crm/Accounts")).status_code == 200
    assert 0.6 <= time.perf_counter() - started < 3
    fake.set_latency()
    started = time.perf_counter()
    api.get(fake.api_url("crm/Accounts"))
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("status", [500, 503])
def test_fail_next(fake: FakeExactOnline, api: requests.Session, status: int) -> None:
    fake.fail_next(2, status=status)
    codes = [api.get(fake.api_url("crm/Accounts")).status_code for _ in range(3)]
    assert codes == [status, status, 200]
    failed = [r.status for r in fake.requests]
    assert failed == [status, status, 200]


def test_fail_next_path_filter(fake: FakeExactOnline, api: requests.Session) -> None:
    fake.fail_next(1, status=500, path_contains="crm/Contacts")
    assert api.get(fake.api_url("crm/Accounts")).status_code == 200
    assert api.get(fake.api_url("crm/Contacts")).status_code == 500
    assert api.get(fake.api_url("crm/Contacts")).status_code == 200


def test_drop_before_response(fake: FakeExactOnline, api: requests.Session) -> None:
    fake.drop_next(1, when="before_response")
    with pytest.raises(requests.ConnectionError):
        api.get(fake.api_url("crm/Accounts"))
    assert api.get(fake.api_url("crm/Accounts")).status_code == 200


def test_drop_mid_response(fake: FakeExactOnline, api: requests.Session) -> None:
    fake.drop_next(1)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        api.get(fake.api_url("crm/Accounts"))
    assert api.get(fake.api_url("crm/Accounts")).status_code == 200


def test_lost_token_response_breaks_the_chain(fake: FakeExactOnline, clock: ScaledClock) -> None:
    """Exact rotated the token but the client never saw the answer: the old refresh token is now dead."""
    token = fake.issue_tokens()
    clock.advance(600)
    fake.drop_next(1, path_contains="oauth2/token")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        refresh(fake, token["refresh_token"])
    assert fake.current_refresh_token != token["refresh_token"]
    assert refresh(fake, token["refresh_token"]).status_code == 401


def test_slow_token_endpoint(fake: FakeExactOnline, clock: ScaledClock) -> None:
    token = fake.issue_tokens()
    clock.advance(600)
    fake.set_token_delay(0.6)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            fake.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": token["refresh_token"],
                "client_id": fake.client_id,
                "client_secret": fake.client_secret,
            },
            timeout=0.2,
        )
    fake.set_token_delay(0)
    time.sleep(0.5)
    assert fake.token_calls[-1].outcome == "ok"  # the token was issued although the client gave up


def test_html_instead_of_json(fake: FakeExactOnline, api: requests.Session) -> None:
    fake.html_error_next(1)
    response = api.get(fake.api_url("crm/Accounts"))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError):
        response.json()
    fake.html_error_next(1, status=502)
    assert api.get(fake.api_url("crm/Accounts")).status_code == 502
    assert api.get(fake.api_url("crm/Accounts")).json()["d"]["results"]


def test_token_endpoint_failure(fake: FakeExactOnline, clock: ScaledClock) -> None:
    token = fake.issue_tokens()
    clock.advance(600)
    fake.fail_next(1, status=503, path_contains="oauth2/token")
    assert refresh(fake, token["refresh_token"]).status_code == 503
    assert fake.current_refresh_token == token["refresh_token"]  # not processed
    assert refresh(fake, token["refresh_token"]).status_code == 200


def test_inspection_counters(fake: FakeExactOnline, api: requests.Session) -> None:
    api.get(fake.api_url("crm/Accounts"))
    api.get(fake.api_url("crm/Accounts"), params={"$top": 1})
    api.post(fake.api_url("crm/Accounts"), json={"Name": "x"})
    assert fake.count_requests("crm/Accounts") == 3
    assert fake.count_requests("crm/accounts", method="GET") == 2
    assert fake.requests[1].query == "%24top=1"
    assert fake.requests[0].division == 1001 and fake.requests[0].status == 200
    stats = requests.get(fake.base_url + "/_fake/stats", timeout=10).json()
    assert stats["requests"] == 3 and stats["divisions"]["1001"]["Accounts"] == 131
    fake.reset_counters()
    assert fake.count_requests() == 0 and fake.token_calls == [] and fake.responses_429 == 0
