"""Fixtures for the UI plugin: a migrated metadata DB, Airflow's real api-server app, real JWTs, the fake server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

# SimpleAuthManager users of three roles: admin and op may edit connections, viewer may not.
os.environ["AIRFLOW__CORE__AUTH_MANAGER"] = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin,op:op,viewer:viewer"
os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", "exactonline-tests-jwt-secret-" + "x" * 40)
os.environ.setdefault("AIRFLOW__API__SECRET_KEY", "exactonline-tests-secret-key")

CALLBACK = "http://testserver/exactonline/callback"


@pytest.fixture(scope="session")
def airflow_db() -> None:
    from airflow_db import migrate

    migrate()


@pytest.fixture(scope="session")
def api_app(airflow_db: None) -> Any:
    from airflow.api_fastapi.app import create_app

    return create_app()


@pytest.fixture(scope="session")
def client(api_app: Any) -> Any:
    from fastapi.testclient import TestClient

    return TestClient(api_app)


def _jwt(username: str, role: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))


@pytest.fixture(scope="session")
def auth(api_app: Any) -> dict[str, dict[str, str]]:
    """Authorization headers per user."""
    return {name: {"Authorization": f"Bearer {_jwt(name, name)}"} for name in ("admin", "op", "viewer")}


@pytest.fixture
def fake() -> Iterator[Any]:
    from airflow_provider_exactonline.testing import FakeExactOnline

    with FakeExactOnline(redirect_uris=[CALLBACK], auto_approve=True) as server:
        yield server


def put_connection(
    conn_id: str,
    *,
    host: str,
    login: str = "fake-client-id",
    password: str = "fake-client-secret",
    extra: dict[str, Any] | None = None,
    conn_type: str = "exactonline",
) -> None:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(Connection).where(Connection.conn_id == conn_id))
        session.add(
            Connection(
                conn_id=conn_id,
                conn_type=conn_type,
                host=host,
                login=login,
                password=password,
                extra=json.dumps(extra or {}),
            )
        )


def extras(conn_id: str) -> dict[str, Any]:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        conn = session.scalars(select(Connection).where(Connection.conn_id == conn_id)).one()
        return dict(conn.extra_dejson)


class _Conns:
    put = staticmethod(put_connection)
    extras = staticmethod(extras)


@pytest.fixture
def conns(airflow_db: None) -> type[_Conns]:
    """``conns.put(conn_id, host=..., extra=...)`` and ``conns.extras(conn_id)`` on the metadata DB."""
    return _Conns


@pytest.fixture(autouse=True)
def _server_process_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``airflow api-server`` sets (airflow/api_fastapi/main.py): hooks read connections from the DB."""
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
