"""Airflow's Test button on the api-server must not strand the connection on a spent refresh token.

``POST /api/v2/connections/test`` copies the stored connection to a random conn_id (an env var) and
calls ``ExactOnlineHook.test_connection()`` on that copy. If the token needs a refresh, the new pair
must land in the *stored* connection's extras, or its refresh token is dead after one click.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def stored_connections(host: str, extras: dict[str, dict]) -> Iterator[None]:
    """``exactonline`` connections in the metadata DB (one per conn_id in ``extras``), removed afterwards."""
    from airflow.models import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        for conn_id, extra in extras.items():
            session.add(
                Connection(
                    conn_id=conn_id,
                    conn_type="exactonline",
                    host=host,
                    login=CLIENT_ID,
                    password=CLIENT_SECRET,
                    extra=json.dumps(extra),
                )
            )
    try:
        yield
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id.in_(list(extras))).delete()


def test_the_copy_made_by_the_test_button_maps_to_its_stored_connection(airflow_db, env_conns):
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from hook_support import set_connection

    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    rows = {"eo_map_a": {"refresh_token": "RT-aaaaaaaaaa"}, "eo_map_b": {"refresh_token": "RT-bbbbbbbbbb"}}
    with stored_connections("nl", rows):
        set_connection("x7hq2kz9w1", host="nl", extra={"refresh_token": "RT-bbbbbbbbbb"})
        assert ExactOnlineHook("x7hq2kz9w1")._original_conn_id() == "eo_map_b"  # same refresh token
        set_connection("p0o9i8u7y6", host="https://start.exactonline.nl", extra={})
        assert ExactOnlineHook("p0o9i8u7y6")._original_conn_id() is None  # no refresh token in the form
        set_connection("eo_map_a", host="nl", extra={"refresh_token": "RT-bbbbbbbbbb"})
        assert ExactOnlineHook("eo_map_a")._original_conn_id() is None  # it is a stored connection itself
        assert ExactOnlineHook("not_in_env")._original_conn_id() is None
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "eo_map_a").delete()
        # One stored connection with the same host and client id is no match: without a refresh token
        # in the form, there is nothing that says the copy is that connection.
        assert ExactOnlineHook("p0o9i8u7y6")._original_conn_id() is None


def test_a_form_without_tokens_is_not_authorized_even_beside_an_authorized_connection(
    airflow_db, env_conns, monkeypatch
):
    """The Test button on an unsaved form (or one never authorized) must not borrow the tokens of
    another stored connection of the same app and report "Connected as ..."."""
    from hook_support import set_connection

    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

    with FakeExactOnline(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as fake:
        tokens, now = fake.issue_tokens(), time.time()
        authorized = {
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "token_expires_at": now + 600,
            "token_obtained_at": now,
        }
        stored = {"eo_authorized": authorized, "eo_never_authorized": {"division": 1001}}
        with stored_connections(fake.base_url, stored):
            set_connection("q1w2e3r4t5", host=fake.base_url, extra={"division": 1001})  # the Test button's copy
            ok, message = ExactOnlineHook("q1w2e3r4t5").test_connection()
            assert (ok, message) == (
                False,
                "not authorized yet: connect it at /exactonline or run `airflow-exactonline authorize <connection id>`",
            )
            monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")  # as in the api-server: DB connections
            ok, message = ExactOnlineHook("eo_never_authorized").test_connection()
            assert not ok and message.endswith("`airflow-exactonline authorize eo_never_authorized`"), message
            assert fake.requests == [] and fake.token_calls == []  # nothing was asked of Exact

            set_connection("y6u7i8o9p0", host=fake.base_url, extra=authorized)  # a copy of the authorized one
            ok, message = ExactOnlineHook("y6u7i8o9p0").test_connection()
            assert ok and "Fake User" in message, message
