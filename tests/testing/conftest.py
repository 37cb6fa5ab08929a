"""Helpers for the fake server's own tests: every test talks HTTP to a real FakeExactOnline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.testing import FakeExactOnline

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"


def api_session(token: str, accept_json: bool = True) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    if accept_json:
        session.headers["Accept"] = "application/json"
    return session


def token_call(fake: FakeExactOnline, **form: Any) -> requests.Response:
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form}
    return requests.post(fake.token_url, data=body, timeout=10)


def refresh(fake: FakeExactOnline, refresh_token: str, **extra: Any) -> requests.Response:
    return token_call(fake, grant_type="refresh_token", refresh_token=refresh_token, **extra)


@pytest.fixture
def clock() -> ScaledClock:
    """A clock the test moves by hand (scale 1, advanced with ``clock.advance``)."""
    return ScaledClock(1.0)


@pytest.fixture
def fake(clock: ScaledClock) -> Iterator[FakeExactOnline]:
    with FakeExactOnline(clock=clock, mandatory_filtering=False, minutely_limit=None, daily_limit=None) as server:
        yield server


@pytest.fixture
def api(fake: FakeExactOnline) -> requests.Session:
    return api_session(fake.issue_tokens()["access_token"])
