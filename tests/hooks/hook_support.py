"""Helpers shared by the hook tests (imported as ``hook_support``; tests/ is not a package)."""

from __future__ import annotations

import json
import os
from typing import Any

CLIENT_ID = "3f1a2b4c-0000-4000-8000-00000000c11d"
CLIENT_SECRET = "s3cr3t-CLIENT-secret-value-7781"
DIVISION = 123456


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
