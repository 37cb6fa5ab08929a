"""Helpers for tests that need Airflow's metadata DB and an ``exactonline`` connection on the fake server.

``migrate()`` creates the schema once per process in the session's temp AIRFLOW_HOME (see
tests/conftest.py). ``connect(fake, ...)`` defines the connection in an ``AIRFLOW_CONN_*`` env var,
seeded with a freshly issued token pair, and ``forget_exactonline_variables()`` removes the token,
lease and watermark Variables earlier tests left behind.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

_migrated = False


def migrate() -> None:
    global _migrated
    if _migrated:
        return
    from airflow.utils.db import initdb

    initdb()
    _migrated = True


def connection_json(fake: Any, *, division: int | None = 1001, extra: dict[str, Any] | None = None) -> str:
    tokens = fake.issue_tokens()
    now = time.time()
    extras: dict[str, Any] = {
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "token_expires_at": now + float(tokens.get("expires_in", 600)),
        "token_obtained_at": now,
        "redirect_uri": "http://127.0.0.1/callback",
    }
    if division is not None:
        extras["division"] = division
    extras.update(extra or {})
    return json.dumps(
        {
            "conn_type": "exactonline",
            "host": fake.base_url,
            "login": fake.client_id,
            "password": fake.client_secret,
            "extra": extras,
        }
    )


def connect(fake: Any, conn_id: str = "exactonline_default", **kwargs: Any) -> str:
    """Point ``conn_id`` at ``fake`` (env var); returns the env var's name."""
    key = f"AIRFLOW_CONN_{conn_id.upper()}"
    os.environ[key] = connection_json(fake, **kwargs)
    return key


def forget_exactonline_variables() -> None:
    from airflow.models import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Variable).filter(Variable.key.like("exactonline_%")).delete(synchronize_session=False)


def get_variable(key: str) -> str | None:
    from airflow.models import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(Variable).filter(Variable.key == key).one_or_none()
        return None if row is None else row.val


# ---------------------------------------------------------------------------------------------- fixtures
# Imported by the conftest of tests/operators, tests/sensors and tests/triggers.

CONN_ID = "exact_ops"


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[Any]:
    from airflow_provider_exactonline.testing import FakeExactOnline

    kwargs: dict[str, Any] = {"rows": {"crm/Accounts": 150, "crm/Contacts": 20}}
    for marker in reversed(list(request.node.iter_markers("fake_exact_online"))):
        kwargs.update(marker.kwargs)
    with FakeExactOnline(**kwargs) as server:
        yield server


@pytest.fixture
def conn(fake: Any) -> Iterator[dict[str, Any]]:
    """The connection (env var) and hook_params with an in-memory token store (no metadata DB needed)."""
    from airflow_provider_exactonline.auth.token_state import TokenState
    from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore

    key = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    os.environ[key] = connection_json(fake)
    extras = json.loads(os.environ[key])["extra"]
    store = InMemoryTokenStore(TokenState.from_extras(extras))
    yield {"exactonline_conn_id": CONN_ID, "hook_params": {"token_store": store}}
    os.environ.pop(key, None)


def ctx(run_id: str = "manual__test", try_number: int = 1) -> dict[str, Any]:
    class _TI:
        def __init__(self) -> None:
            self.try_number = try_number
            self.map_index = -1
            self.pushed: dict[str, Any] = {}

        def xcom_push(self, key: str, value: Any) -> None:
            self.pushed[key] = value

    return {"run_id": run_id, "ti": _TI(), "ts": time.strftime("%Y-%m-%dT%H:%M:%S")}
