"""Routes of the "Exact Online" page through Airflow's real api-server app, real JWTs and the fake Exact server."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from airflow_provider_exactonline.plugins import state as state_mod

CONN = "exact_ui"


def _start(client: Any, headers: dict[str, str], conn_id: str = CONN, **params: Any) -> str:
    """GET .../authorize; return the URL of Exact's consent page it redirects to."""
    response = client.get(
        f"/exactonline/connections/{conn_id}/authorize", headers=headers, params=params, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return response.headers["location"]


def _choose_division(client: Any, headers: dict[str, str], conn_id: str, division: str = "1002") -> Any:
    """POST the division form (not following the redirect back to the list)."""
    url = f"/exactonline/connections/{conn_id}/division"
    return client.post(url, data={"division": division}, headers=headers, follow_redirects=False)


def _approve(auth_url: str) -> str:
    """The fake (auto_approve) answers the consent page with a redirect to our callback: return that path+query."""
    response = requests.get(auth_url, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["Location"])
    return f"{location.path}?{location.query}"


@pytest.fixture
def connection(conns: Any, fake: Any) -> str:
    conns.put(CONN, host=fake.base_url)
    return CONN


def test_plugin_is_registered_and_mounted(client: Any, auth: dict[str, dict[str, str]]) -> None:
    response = client.get("/api/v2/plugins", headers=auth["admin"])
    assert response.status_code == 200
    plugin = next(p for p in response.json()["plugins"] if p["name"] == "exactonline")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/exactonline"
    assert plugin["external_views"] == []  # an iframe view could not navigate the tab to Exact's login
    app = plugin["react_apps"][0]
    assert (app["name"], app["url_route"], app["destination"], app["category"]) == (
        "Exact Online",
        "exactonline",
        "nav",
        "admin",
    )
    bundle = client.get(f"/{app['bundle_url']}")  # relative to Airflow's base URL; static code, no login
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("text/javascript")
    assert "globalThis.AirflowPlugin = ExactOnlinePage" in bundle.text and "X-ExactOnline-Embed" in bundle.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/exactonline/"),
        ("GET", f"/exactonline/connections/{CONN}/authorize"),
        ("GET", "/exactonline/callback?code=x&state=eA.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("GET", f"/exactonline/connections/{CONN}/division"),
        ("POST", f"/exactonline/connections/{CONN}/division"),
    ],
)
def test_every_route_needs_a_login(client: Any, connection: str, method: str, path: str) -> None:
    before = _extras_without_nothing(connection)
    response = client.request(method, path, data={"division": "1001"}, follow_redirects=False)
    assert response.status_code == 401
    assert _extras_without_nothing(connection) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/exactonline/"),
        ("GET", f"/exactonline/connections/{CONN}/authorize"),
        ("GET", f"/exactonline/connections/{CONN}/division"),
        ("POST", f"/exactonline/connections/{CONN}/division"),
    ],
)
def test_viewer_may_not_edit_connections(client: Any, auth: Any, connection: str, method: str, path: str) -> None:
    before = _extras_without_nothing(connection)
    response = client.request(method, path, headers=auth["viewer"], data={"division": "1002"}, follow_redirects=False)
    assert response.status_code == 403
    assert _extras_without_nothing(connection) == before


def _extras_without_nothing(conn_id: str) -> dict[str, Any]:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return dict(session.scalars(select(Connection).where(Connection.conn_id == conn_id)).one().extra_dejson)


def test_unauthenticated_browser_gets_a_login_link(client: Any, connection: str) -> None:
    response = client.get("/exactonline/", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert "/api/v2/auth/login?next=" in response.text


def test_happy_path_writes_tokens_and_offers_divisions(
    client: Any, auth: Any, connection: str, fake: Any, conns: Any
) -> None:
    auth_url = _start(client, auth["admin"])
    query = parse_qs(urlsplit(auth_url).query)
    assert auth_url.startswith(fake.auth_url)
    assert query["redirect_uri"] == ["http://testserver/exactonline/callback"]
    assert query["client_id"] == ["fake-client-id"]
    pending = conns.extras(connection)[state_mod.PENDING_KEY]
    assert list(pending) == [state_mod.state_digest(query["state"][0])]  # only a hash is stored

    callback = _approve(auth_url)
    response = client.get(callback, headers=auth["admin"])
    assert response.status_code == 200, response.text
    stored = conns.extras(connection)
    assert stored["access_token"] == fake.current_access_token
    assert stored["refresh_token"] == fake.current_refresh_token
    assert stored["token_expires_at"] > time.time() + 500
    assert state_mod.PENDING_KEY not in stored  # consumed
    # success page: connected, divisions to choose from, the new default division, and no token anywhere
    assert "is connected to Exact Online" in response.text
    assert 'value="1001"' in response.text and 'value="1002"' in response.text
    assert "Fake Company BE" in response.text
    assert stored["division"] == 1001 and stored["division_name"] == "Fake Company NL"
    assert stored["access_token"] not in response.text and stored["refresh_token"] not in response.text

    # replaying the same callback is refused and changes nothing
    replay = client.get(callback, headers=auth["admin"])
    assert replay.status_code == 400
    assert "unknown or was already used" in replay.json()["detail"]
    assert conns.extras(connection) == stored

    # choose another default division
    saved = _choose_division(client, auth["admin"], connection)
    assert saved.status_code == 303
    after = conns.extras(connection)
    assert after["division"] == 1002 and after["division_name"] == "Fake Company BE"
    assert after["refresh_token"] == fake.current_refresh_token  # tokens kept

    # the index page shows the health, without tokens
    page = client.get("/exactonline/", headers=auth["admin"])
    assert page.status_code == 200
    assert "Reconnect" in page.text and "Fake Company BE" in page.text
    assert "http://testserver/exactonline/callback" in page.text
    assert after["refresh_token"] not in page.text and after["access_token"] not in page.text


def test_forged_state_writes_nothing(client: Any, auth: Any, connection: str, conns: Any, fake: Any) -> None:
    _start(client, auth["admin"])  # a real pending state exists
    before = conns.extras(connection)
    forged = f"{state_mod._b64encode(connection)}.{secrets.token_urlsafe(32)}"
    for state in (forged, "not-a-state", ""):
        response = client.get("/exactonline/callback", params={"code": "abc", "state": state}, headers=auth["admin"])
        assert response.status_code == 400, state
    assert conns.extras(connection) == before
    assert "access_token" not in before
    assert fake.token_calls == []  # no code exchange was even attempted


def test_state_is_bound_to_the_user(client: Any, auth: Any, connection: str, conns: Any) -> None:
    callback = _approve(_start(client, auth["admin"]))
    before = conns.extras(connection)
    response = client.get(callback, headers=auth["op"])  # op may edit connections, but did not start this
    assert response.status_code == 400
    assert "another Airflow user" in response.json()["detail"]
    assert conns.extras(connection) == before
    assert client.get(callback, headers=auth["admin"]).status_code == 200  # still usable by its owner


def test_viewer_cannot_complete_a_callback(client: Any, auth: Any, connection: str, conns: Any) -> None:
    callback = _approve(_start(client, auth["admin"]))
    before = conns.extras(connection)
    assert client.get(callback, headers=auth["viewer"]).status_code == 403
    assert client.get(callback).status_code == 401
    assert conns.extras(connection) == before


def test_expired_state_is_refused(client: Any, auth: Any, connection: str, conns: Any, fake: Any) -> None:
    state = state_mod.issue_state(connection, "admin", "http://testserver/exactonline/callback", now=time.time() - 3600)
    response = client.get("/exactonline/callback", params={"code": "abc", "state": state}, headers=auth["admin"])
    assert response.status_code == 400
    assert "expired" in response.json()["detail"]
    assert "access_token" not in conns.extras(connection)
    assert fake.token_calls == []


def test_user_denied_at_exact(client: Any, auth: Any, connection: str, conns: Any, fake: Any) -> None:
    fake.auto_approve = False
    auth_url = _start(client, auth["admin"])
    consent = requests.get(auth_url, timeout=10)
    assert consent.status_code == 200 and "Authorize" in consent.text
    form = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', consent.text))
    denied = requests.post(fake.auth_url, data={**form, "action": "deny"}, allow_redirects=False, timeout=10)
    location = urlsplit(denied.headers["Location"])
    response = client.get(f"{location.path}?{location.query}", headers={**auth["admin"], "Accept": "text/html"})
    assert response.status_code == 400
    assert "Access was not granted" in response.text and "access_denied" in response.text
    assert "access_denied:" not in response.text and "To try again, click Connect" in response.text
    assert "access_token" not in conns.extras(connection)


def test_wrong_client_secret_is_shown(client: Any, auth: Any, conns: Any, fake: Any) -> None:
    conns.put(CONN, host=fake.base_url, password="wrong-secret")
    callback = _approve(_start(client, auth["admin"]))
    response = client.get(callback, headers={**auth["admin"], "Accept": "text/html"})
    assert response.status_code == 502
    assert "client credentials" in response.text
    assert "refused the client secret" in response.text and "Password field" in response.text
    assert "refused the authorization code" not in response.text
    assert "wrong-secret" not in response.text
    assert "access_token" not in conns.extras(CONN)


def test_expired_code_is_shown(client: Any, auth: Any, conns: Any) -> None:
    from airflow_provider_exactonline.testing import FakeExactOnline

    with FakeExactOnline(
        redirect_uris=["http://testserver/exactonline/callback"], auto_approve=True, authorization_code_lifetime=0.0
    ) as slow:
        conns.put(CONN, host=slow.base_url)
        callback = _approve(_start(client, auth["admin"]))
        time.sleep(0.05)
        response = client.get(callback, headers=auth["admin"])
    assert response.status_code == 502
    assert "start the authorization again" in response.json()["detail"]
    assert "access_token" not in conns.extras(CONN)


def test_connection_redirect_uri_and_force_login(client: Any, auth: Any, conns: Any, fake: Any) -> None:
    conns.put(CONN, host=fake.base_url, extra={"redirect_uri": "https://airflow.example.com/exactonline/callback"})
    query = parse_qs(urlsplit(_start(client, auth["admin"], force_login=1)).query)
    assert query["redirect_uri"] == ["https://airflow.example.com/exactonline/callback"]
    assert query["force_login"] == ["1"]
    page = client.get("/exactonline/", headers=auth["admin"])
    assert "https://airflow.example.com/exactonline/callback" in page.text
    assert "from the connection&#39;s redirect_uri extra" in page.text


def test_index_escapes_html_and_never_shows_tokens(client: Any, auth: Any, conns: Any, fake: Any) -> None:
    conns.put(
        CONN,
        host=fake.base_url,
        extra={
            "access_token": "AT-secret-value",
            "refresh_token": "RT-secret-value",
            "token_obtained_at": time.time() - 86400,
            "token_expires_at": time.time() - 86000,
            "last_refresh_error": "<script>alert(1)</script>",
            "division": 1001,
            "division_name": "<b>Evil</b>",
        },
    )
    conns.put("exact_broken", host=fake.base_url, login="")
    conns.put("not_exact", host="x", conn_type="http")
    page = client.get("/exactonline/", headers=auth["admin"])
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<b>Evil</b>" not in page.text
    assert "AT-secret-value" not in page.text and "RT-secret-value" not in page.text
    assert "Refresh failed" in page.text
    assert "exact_broken" in page.text and "Client ID" in page.text  # misconfigured, named field
    assert "not_exact" not in page.text


def test_division_form_rejects_cross_site_and_unknown(client: Any, auth: Any, connection: str, conns: Any) -> None:
    assert client.get(_approve(_start(client, auth["admin"])), headers=auth["admin"]).status_code == 200
    url = f"/exactonline/connections/{connection}/division"
    cross = client.post(url, data={"division": "1002"}, headers={**auth["admin"], "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    unknown = client.post(url, data={"division": "4242"}, headers=auth["admin"])
    assert unknown.status_code == 400 and "1001, 1002" in unknown.json()["detail"]
    assert conns.extras(connection)["division"] == 1001
    chooser = client.get(url, headers=auth["admin"])
    assert chooser.status_code == 200 and 'value="1002"' in chooser.text


def test_wrong_type_and_missing_connection(client: Any, auth: Any, conns: Any) -> None:
    conns.put("not_exact", host="x", conn_type="http")
    wrong = client.get("/exactonline/connections/not_exact/authorize", headers=auth["admin"], follow_redirects=False)
    assert wrong.status_code == 400 and "Exact Online" in wrong.json()["detail"]
    missing = client.get("/exactonline/connections/nope/authorize", headers=auth["admin"], follow_redirects=False)
    assert missing.status_code == 404 and "--print json" in missing.json()["detail"]


def test_division_pages_use_the_newer_pair_workers_saved_in_the_variable(
    client: Any, auth: Any, conns: Any, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page uses the process's default stores: the newest pair is in the Variable, so no token call."""
    from airflow_db import forget_exactonline_variables

    from airflow_provider_exactonline.auth.token_state import TokenState
    from airflow_provider_exactonline.auth.token_stores import VariableTokenStore

    monkeypatch.setenv("AIRFLOW__EXACTONLINE__TOKEN_REUSE_POLL_SECONDS", "0.5")  # fail fast if it refreshes
    now = time.time()
    spent = fake.issue_tokens()  # what the connection row still holds, long expired
    conns.put(
        CONN,
        host=fake.base_url,
        extra={
            "access_token": spent["access_token"],
            "refresh_token": spent["refresh_token"],
            "token_obtained_at": now - 900,
            "token_expires_at": now - 300,
            "division": 1001,
        },
    )
    newer = fake.issue_tokens()  # a worker's rotation since then: only in the Variable; the row's pair is dead
    VariableTokenStore(CONN).save(TokenState(newer["access_token"], newer["refresh_token"], now + 600, now - 5))
    try:
        chooser = client.get(f"/exactonline/connections/{CONN}/division", headers=auth["admin"])
        assert chooser.status_code == 200 and 'value="1002"' in chooser.text, chooser.text
        saved = _choose_division(client, auth["admin"], CONN)
        assert saved.status_code == 303
        assert fake.token_calls == []  # no refresh of the spent pair, no "Old refresh token used"
        after = conns.extras(CONN)
        assert after["division"] == 1002 and after["division_name"] == "Fake Company BE"
        assert "last_refresh_error" not in after
    finally:
        forget_exactonline_variables()


def test_pages_work_with_multi_team_on(
    client: Any, auth: Any, connection: str, conns: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``[core] multi_team`` Airflow's own PUT check parses the body as JSON; ours must not 400."""
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    assert client.get("/exactonline/", headers=auth["admin"]).status_code == 200
    assert _start(client, auth["admin"], connection).startswith("http")
    url = f"/exactonline/connections/{connection}/division"
    assert client.get(url, headers=auth["admin"]).status_code == 200
    saved = _choose_division(client, auth["admin"], connection)
    assert saved.status_code == 303 and conns.extras(connection)["division"] == 1002
    assert client.get(url, headers=auth["viewer"]).status_code == 403
    assert client.get(url).status_code == 401


def test_a_row_locked_past_the_timeout_gives_a_page_not_a_hang(
    client: Any, auth: Any, connection: str, conns: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_exactonline.auth.token_stores import ConnectionExtrasTokenStore

    monkeypatch.setenv("AIRFLOW__EXACTONLINE__TOKEN_LOCK_TIMEOUT", "0.3")
    with ConnectionExtrasTokenStore(connection).lock():  # a token refresh holding the row
        busy = client.get(
            f"/exactonline/connections/{connection}/authorize",
            headers={**auth["admin"], "Accept": "text/html"},
            follow_redirects=False,
        )
    assert busy.status_code == 503 and "Try again" in busy.text and "token lock" in busy.text
    assert state_mod.PENDING_KEY not in conns.extras(connection)
