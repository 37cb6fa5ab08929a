"""OAuth2 as Exact does it: consent page, single-use codes, rotating single-use refresh tokens."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests_oauthlib import OAuth2Session

from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.testing import FakeExactOnline

from .conftest import CLIENT_ID, CLIENT_SECRET, api_session, refresh, token_call

REDIRECT = "http://127.0.0.1:8899/callback"


def _authorize(fake: FakeExactOnline, redirect_uri: str = REDIRECT, state: str = "xyz") -> str:
    """Open the consent page, click Authorize (submit its form), return the code from the redirect."""
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "state": state,
        "force_login": "0",
    }
    page = requests.get(fake.auth_url, params=params, allow_redirects=False, timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert 'id="authorize"' in page.text and ">Authorize<" in page.text
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    assert form["redirect_uri"] == redirect_uri and form["state"] == state
    posted = requests.post(fake.auth_url, data={**form, "action": "authorize"}, allow_redirects=False, timeout=10)
    assert posted.status_code == 302
    location = urlsplit(posted.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect_uri
    query = parse_qs(location.query)
    assert query["state"] == [state]
    return query["code"][0]


def test_full_authorization_code_flow(fake: FakeExactOnline) -> None:
    code = _authorize(fake)
    response = token_call(fake, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert response.status_code == 200
    token = response.json()
    assert set(token) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == "600"  # a string, as Exact sends it
    assert fake.current_access_token == token["access_token"]
    assert fake.current_refresh_token == token["refresh_token"]
    me = api_session(token["access_token"]).get(fake.base_url + "/api/v1/current/Me")
    assert me.status_code == 200
    user = me.json()["d"]["results"][0]
    assert user["CurrentDivision"] == 1001 and user["FullName"] and user["UserID"]
    # The code is single-use.
    again = token_call(fake, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert again.status_code == 400
    assert [c.outcome for c in fake.token_calls] == ["ok", "invalid_code"]


def test_requests_oauthlib_exchange_works(fake: FakeExactOnline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider's auth module uses requests-oauthlib; its default client auth must be accepted."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake is plain http on loopback
    session = OAuth2Session(CLIENT_ID, redirect_uri=REDIRECT)
    url, _ = session.authorization_url(fake.auth_url)
    page = requests.get(url, allow_redirects=False, timeout=10)
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    redirect = requests.post(fake.auth_url, data={**form, "action": "authorize"}, allow_redirects=False, timeout=10)
    token = session.fetch_token(
        fake.token_url,
        authorization_response=redirect.headers["Location"],
        client_secret=CLIENT_SECRET,
        include_client_id=True,
    )
    assert token["access_token"] == fake.current_access_token


def test_auto_approve_redirects_without_page(clock: ScaledClock) -> None:
    with FakeExactOnline(auto_approve=True, clock=clock, mandatory_filtering=False) as fake:
        response = requests.get(
            fake.auth_url,
            params={"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "state": "s1"},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 302
        assert parse_qs(urlsplit(response.headers["Location"]).query)["state"] == ["s1"]


def test_deny_redirects_with_error(fake: FakeExactOnline) -> None:
    response = requests.post(
        fake.auth_url,
        data={
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "state": "s",
            "action": "deny",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["Location"]).query)["error"] == ["access_denied"]


@pytest.mark.parametrize(
    ("client_id", "redirect_uri"),
    [("someone-else", REDIRECT), (CLIENT_ID, "https://evil.example/callback"), (CLIENT_ID, "")],
)
def test_bad_client_or_redirect_gives_error_page_without_redirect(
    fake: FakeExactOnline, client_id: str, redirect_uri: str
) -> None:
    response = requests.get(
        fake.auth_url,
        params={"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "text/html" in response.headers["Content-Type"]


def test_strict_redirect_list_rejects_other_loopback_ports(clock: ScaledClock) -> None:
    with FakeExactOnline(allow_any_loopback_redirect=False, clock=clock, mandatory_filtering=False) as fake:
        bad = requests.get(
            fake.auth_url,
            params={"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code"},
            allow_redirects=False,
            timeout=10,
        )
        assert bad.status_code == 400
        good = requests.get(
            fake.auth_url,
            params={"client_id": CLIENT_ID, "redirect_uri": "http://127.0.0.1/callback", "response_type": "code"},
            allow_redirects=False,
            timeout=10,
        )
        assert good.status_code == 200


def test_code_exchange_needs_matching_redirect_uri(fake: FakeExactOnline) -> None:
    code = _authorize(fake)
    response = token_call(fake, grant_type="authorization_code", code=code, redirect_uri="http://127.0.0.1:1/other")
    assert response.status_code == 400
    assert fake.current_access_token is None


def test_code_expires_after_three_minutes(fake: FakeExactOnline, clock: ScaledClock) -> None:
    code = _authorize(fake)
    clock.advance(181)
    response = token_call(fake, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert response.status_code == 400
    assert fake.token_errors["code_expired"] == 1


def test_rotation_and_reuse_rejected(fake: FakeExactOnline, clock: ScaledClock) -> None:
    first = fake.issue_tokens()
    clock.advance(600)
    response = refresh(fake, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert fake.current_refresh_token == second["refresh_token"]
    reused = refresh(fake, first["refresh_token"])
    assert reused.status_code == 401
    assert reused.json() == {"error": "unauthorized_client", "error_description": "Old refresh token used."}
    assert fake.refresh_errors["old_refresh_token"] == 1
    assert [t["refresh_token"] for t in fake.token_chain] == [first["refresh_token"], second["refresh_token"]]


def test_too_early_refresh_rejected_and_chain_kept(fake: FakeExactOnline, clock: ScaledClock) -> None:
    token = fake.issue_tokens()
    clock.advance(569)  # 31 s left: too early
    response = refresh(fake, token["refresh_token"])
    assert response.status_code == 400
    assert response.json() == {
        "error": "access_denied",
        "error_description": "Rate limit exceeded: access_token not expired",
    }
    assert response.headers["Reason"] == "TooEarlyToRefreshTokens"
    assert fake.refresh_errors["too_early"] == 1
    assert fake.current_refresh_token == token["refresh_token"]
    clock.advance(2)  # 29 s left: inside the last 30 s
    assert refresh(fake, token["refresh_token"]).status_code == 200


def test_refresh_window_scales_with_lifetime(clock: ScaledClock) -> None:
    with FakeExactOnline(access_token_lifetime=6, clock=clock, mandatory_filtering=False) as fake:
        token = fake.issue_tokens()
        assert token["expires_in"] == "6"
        clock.advance(5.5)  # 0.5 s left > 0.3 s window
        assert refresh(fake, token["refresh_token"]).status_code == 400
        clock.advance(0.3)
        assert refresh(fake, token["refresh_token"]).status_code == 200


def test_unused_refresh_token_expires(clock: ScaledClock) -> None:
    with FakeExactOnline(refresh_token_lifetime=3600, clock=clock, mandatory_filtering=False) as fake:
        token = fake.issue_tokens()
        clock.advance(3601)
        response = refresh(fake, token["refresh_token"])
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "invalid_request"
        assert body["error_description"].startswith("The refresh token expired at ")
        assert fake.refresh_errors["refresh_token_expired"] == 1


def test_wrong_secret_rejected(fake: FakeExactOnline, clock: ScaledClock) -> None:
    token = fake.issue_tokens()
    clock.advance(600)
    response = refresh(fake, token["refresh_token"], client_secret="wrong")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert fake.current_refresh_token == token["refresh_token"]


def test_token_endpoint_daily_cap(clock: ScaledClock) -> None:
    with FakeExactOnline(token_calls_per_day=2, clock=clock, mandatory_filtering=False) as fake:
        for _ in range(2):
            token_call(fake, grant_type="refresh_token", refresh_token="nope")
        capped = token_call(fake, grant_type="refresh_token", refresh_token="nope")
        assert capped.status_code == 400
        assert "Rate limit exceeded" in capped.json()["error_description"]
        assert fake.token_errors["rate_limited"] == 1


def test_new_authorization_replaces_chain(fake: FakeExactOnline, clock: ScaledClock) -> None:
    old = fake.issue_tokens()
    code = _authorize(fake)
    new = token_call(fake, grant_type="authorization_code", code=code, redirect_uri=REDIRECT).json()
    clock.advance(600)
    assert refresh(fake, old["refresh_token"]).status_code == 401
    assert api_session(old["access_token"]).get(fake.api_url("crm/Accounts")).status_code == 401
    assert refresh(fake, new["refresh_token"]).status_code == 200


def test_api_rejects_expired_and_unknown_access_tokens(fake: FakeExactOnline, clock: ScaledClock) -> None:
    token = fake.issue_tokens()
    assert api_session(token["access_token"]).get(fake.api_url("crm/Accounts")).status_code == 200
    assert api_session("made-up").get(fake.api_url("crm/Accounts")).status_code == 401
    assert (
        requests.get(fake.api_url("crm/Accounts"), headers={"Accept": "application/json"}, timeout=10).status_code
        == 401
    )
    clock.advance(600)
    expired = api_session(token["access_token"]).get(fake.api_url("crm/Accounts"))
    assert expired.status_code == 401
    assert expired.json()["error"]["message"]["value"]


def test_previous_access_token_valid_until_it_expires(fake: FakeExactOnline, clock: ScaledClock) -> None:
    first = fake.issue_tokens()
    clock.advance(590)
    assert refresh(fake, first["refresh_token"]).status_code == 200
    assert api_session(first["access_token"]).get(fake.api_url("crm/Accounts")).status_code == 200
    clock.advance(11)
    assert api_session(first["access_token"]).get(fake.api_url("crm/Accounts")).status_code == 401


def test_basic_auth_client_credentials_accepted(fake: FakeExactOnline, clock: ScaledClock) -> None:
    token = fake.issue_tokens()
    clock.advance(600)
    response = requests.post(
        fake.token_url,
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    assert response.status_code == 200


def test_parallel_refresh_with_one_token_has_one_winner(fake: FakeExactOnline, clock: ScaledClock) -> None:
    """Two workers refreshing with the same refresh token: the loser gets "Old refresh token used"."""
    from concurrent.futures import ThreadPoolExecutor

    token = fake.issue_tokens()
    clock.advance(600)
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(lambda _: refresh(fake, token["refresh_token"]).status_code, range(4)))
    assert statuses == [200, 401, 401, 401]
    assert fake.refresh_errors["old_refresh_token"] == 3
