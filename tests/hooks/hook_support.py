"""Helpers shared by the hook tests (imported as ``hook_support``; tests/ is not a package)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore
from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
from airflow_provider_exactonline.testing import FakeExactOnline

CLIENT_ID = "3f1a2b4c-0000-4000-8000-00000000c11d"
CLIENT_SECRET = "s3cr3t-CLIENT-secret-value-7781"
DIVISION = 123456
FAKE_DIVISION = 1001  # the fake's first division


class ManualClock:
    """A clock that only moves when someone sleeps (or ``advance``); records every sleep."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StandInTokenManager:
    """Stand-in for unit tests that need no token endpoint: hands out tokens from a list."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = list(tokens)
        self.index = 0
        self.unauthorized_calls: list[str] = []

    def access_token(self) -> str:
        return self.tokens[self.index]

    def reload(self) -> str:
        """What the stores hold (never None: the stand-in is authorized)."""
        return self.tokens[self.index]

    def on_unauthorized(self, rejected: str) -> str:
        self.unauthorized_calls.append(rejected)
        if self.index + 1 < len(self.tokens):
            self.index += 1
        return self.tokens[self.index]


def set_connection(conn_id: str, *, host: str, extra: dict[str, Any] | None = None, **fields: Any) -> None:
    """Define an Airflow connection through ``AIRFLOW_CONN_<ID>`` (JSON form)."""
    value = {"conn_type": "exactonline", "host": host, "login": CLIENT_ID, "password": CLIENT_SECRET}
    value.update(fields)
    value["extra"] = extra or {}
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(value)


def token_extras(fake: FakeExactOnline, clock: Any, *, expires_in: float | None = None) -> dict[str, Any]:
    """Fresh tokens from the fake as the connection's extras (what 'Connect to Exact Online' stores).

    ``expires_in``: age the pair so that only this many seconds of its life are left, by moving the
    shared clock forward (the fake and the hook then agree that the token is that old).
    """
    tokens = fake.issue_tokens()
    now = clock.time()
    lifetime = float(tokens["expires_in"])
    extras = {
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "token_expires_at": now + lifetime,
        "token_obtained_at": now,
    }
    if expires_in is not None:
        clock.advance(lifetime - expires_in)
    return extras


@contextmanager
def fake_hook(
    conn_id: str = "eo_fake",
    *,
    clock: Any = None,
    division: int | None = FAKE_DIVISION,
    expires_in: float | None = None,
    hook_kwargs: dict[str, Any] | None = None,
    **fake_kwargs: Any,
) -> Iterator[tuple[FakeExactOnline, ExactOnlineHook, InMemoryTokenStore]]:
    """A started fake, a connection to it in an env var, and a hook with an in-memory token store."""
    clock = clock or ScaledClock(scale=60)
    fake_kwargs.setdefault("minutely_limit", None)
    with FakeExactOnline(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock, **fake_kwargs) as fake:
        extras = token_extras(fake, clock, expires_in=expires_in)
        if division is not None:
            extras["division"] = division
        set_connection(conn_id, host=fake.base_url, extra=extras)
        store = InMemoryTokenStore(TokenState.from_extras(extras))
        hook = ExactOnlineHook(conn_id, token_store=store, clock=clock, **(hook_kwargs or {}))
        yield fake, hook, store
