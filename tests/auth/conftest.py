"""Fixtures for the token lifecycle tests: a fake Exact Online on loopback with a clock we drive."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from airflow_provider_exactonline.auth import InMemoryTokenStore, TokenManager, TokenState
from airflow_provider_exactonline.config import ExactOnlineConfig
from airflow_provider_exactonline.testing import FakeExactOnline


class ManualClock:
    """Shared by the fake and the manager: time moves only when a test says so (sleep advances it)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeExactOnline]:
    with FakeExactOnline(port=0, clock=clock, auto_approve=True) as server:
        yield server


@pytest.fixture
def config(fake: FakeExactOnline) -> ExactOnlineConfig:
    return ExactOnlineConfig(
        conn_id="exact_test",
        base_url=fake.base_url,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        redirect_uri="http://127.0.0.1/callback",
    )


def authorized_state(fake: FakeExactOnline, clock: ManualClock) -> TokenState:
    """A pair as a completed authorization leaves it."""
    return TokenState.from_token_response(fake.issue_tokens(), clock.time())


@pytest.fixture
def make_manager(config: ExactOnlineConfig, clock: ManualClock):
    def make(*stores, **kwargs) -> TokenManager:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("reuse_poll_seconds", 0.3)
        kwargs.setdefault("connect_retry_wait", 0.01)
        return TokenManager(config, list(stores) or [InMemoryTokenStore()], **kwargs)

    return make
