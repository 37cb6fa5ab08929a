"""Airflow's Test button on the api-server must not strand the connection on a spent refresh token.

``POST /api/v2/connections/test`` copies the stored connection to a random conn_id (an env var) and
calls ``ExactOnlineHook.test_connection()`` on that copy. If the token needs a refresh, the new pair
must land in the *stored* connection's extras, or its refresh token is dead after one click.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from hook_support import CLIENT_ID, CLIENT_SECRET

from airflow_provider_exactonline.testing import FakeExactOnline

CONN_ID = "eo_test_button"


@pytest.fixture(scope="module")
def api_client(airflow_db) -> Iterator[object]:
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    with TestClient(create_app("core")) as client:
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN"))
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def _stored_extras() -> dict:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(Connection).filter(Connection.conn_id == CONN_ID).one().extra_dejson


@pytest.mark.integration
def test_test_button_persists_the_rotation_into_the_stored_connection(api_client, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    with FakeExactOnline(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, access_token_lifetime=1.0) as fake:
        tokens = fake.issue_tokens()
        now = time.time()
        extras = {
            "division": 1001,
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "token_expires_at": now + 1.0,
            "token_obtained_at": now,
        }
        body = {
            "connection_id": CONN_ID,
            "conn_type": "exactonline",
            "host": fake.base_url,
            "login": CLIENT_ID,
            "password": CLIENT_SECRET,
            "extra": json.dumps(extras),
        }
        assert api_client.post("/api/v2/connections", json=body).status_code == 201
        try:
            time.sleep(1.2)  # the access token has expired: the test must refresh
            response = api_client.post("/api/v2/connections/test", json=body)
            assert response.status_code == 200, response.text
            result = response.json()
            assert result["status"] is True, result["message"]
            assert "Fake User" in result["message"]
            assert len(fake.token_calls) == 1 and fake.token_errors == {}

            stored = _stored_extras()
            assert stored["refresh_token"] == fake.current_refresh_token != tokens["refresh_token"]
            assert stored["access_token"] == fake.current_access_token
            assert stored["division"] == 1001

            # A second click later still works: the chain is alive (no re-authorization needed).
            time.sleep(1.2)
            again = api_client.post("/api/v2/connections/test", json=body | {"extra": json.dumps(stored)}).json()
            assert again["status"] is True, again["message"]
            assert fake.token_errors == {}
            assert _stored_extras()["refresh_token"] == fake.current_refresh_token
        finally:
            api_client.delete(f"/api/v2/connections/{CONN_ID}")


def test_the_copy_made_by_the_test_button_maps_to_its_stored_connection(airflow_db, env_conns):
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from hook_support import set_connection

    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    rows = {"eo_map_a": "RT-aaaaaaaaaa", "eo_map_b": "RT-bbbbbbbbbb"}
    with create_session() as session:
        for conn_id, refresh in rows.items():
            session.add(
                Connection(
                    conn_id=conn_id,
                    conn_type="exactonline",
                    host="nl",
                    login=CLIENT_ID,
                    password=CLIENT_SECRET,
                    extra=json.dumps({"refresh_token": refresh}),
                )
            )
    try:
        set_connection("x7hq2kz9w1", host="nl", extra={"refresh_token": "RT-bbbbbbbbbb"})
        assert ExactOnlineHook("x7hq2kz9w1")._original_conn_id() == "eo_map_b"  # same refresh token
        set_connection("p0o9i8u7y6", host="https://start.exactonline.nl", extra={})
        assert ExactOnlineHook("p0o9i8u7y6")._original_conn_id() is None  # two stored candidates: ambiguous
        set_connection("eo_map_a", host="nl", extra={"refresh_token": "RT-bbbbbbbbbb"})
        assert ExactOnlineHook("eo_map_a")._original_conn_id() is None  # it is a stored connection itself
        assert ExactOnlineHook("not_in_env")._original_conn_id() is None
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "eo_map_a").delete()
        assert ExactOnlineHook("p0o9i8u7y6")._original_conn_id() == "eo_map_b"  # same host and client id
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id.in_(list(rows))).delete()
