"""Narrow HTTP-behaviour tests of ExactOnlineHook.request with requests_mock (no server needed).

The end-to-end behaviour against the fake Exact Online server is in test_hook_fake.py.
"""

from __future__ import annotations

import json
import re

import pytest
import requests
import requests_mock
from hook_support import CLIENT_SECRET, DIVISION, StandInTokenManager, set_connection
from urllib3.exceptions import MaxRetryError, NewConnectionError

from airflow_provider_exactonline.exceptions import (
    ExactOnlineAuthError,
    ExactOnlineBadRequest,
    ExactOnlineConfigError,
    ExactOnlineNotFound,
    ExactOnlineRateLimitExceeded,
    ExactOnlineResponseError,
    ExactOnlineServerError,
)
from airflow_provider_exactonline.hooks.calls import _PLAIN_URL
from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook, redact, snippet

BASE = "https://start.exactonline.nl"
API = f"{BASE}/api/v1/{DIVISION}"


@pytest.fixture
def hook(env_conns, manual_clock) -> ExactOnlineHook:
    set_connection("eo_unit", host="nl", extra={"division": DIVISION})
    h = ExactOnlineHook("eo_unit", clock=manual_clock, max_retries=2)
    h.__dict__["token_manager"] = StandInTokenManager(["tok-one-aaaaaaaa", "tok-two-bbbbbbbb"])
    return h


def _err(message: str) -> dict:
    return {"error": {"code": "", "message": {"lang": "", "value": message}}}


def test_headers_division_and_d_unwrapping(hook):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", json={"d": {"results": [{"ID": "a"}], "__next": None}})
        m.get(f"{BASE}/api/v1/777/crm/Accounts", json={"d": [{"ID": "b"}]})
        m.get(f"{BASE}/api/v1/current/Me", json={"d": {"results": [{"CurrentDivision": 5}]}})
        assert hook.get("crm/Accounts?$filter=Blocked%20eq%20false") == {"results": [{"ID": "a"}], "__next": None}
        assert hook.get("crm/Accounts?$filter=Blocked%20eq%20false", division=777) == [{"ID": "b"}]
        assert hook.current_user() == {"CurrentDivision": 5}
        first = m.request_history[0]
        assert first.headers["Accept"] == "application/json"
        assert first.headers["Authorization"] == "Bearer tok-one-aaaaaaaa"
    assert hook.api_calls == 3


def test_hook_division_overrides_connection(env_conns, manual_clock):
    set_connection("eo_div", host="nl", extra={"division": DIVISION})
    hook = ExactOnlineHook("eo_div", division=42, clock=manual_clock)
    hook.__dict__["token_manager"] = StandInTokenManager(["tok-one-aaaaaaaa"])
    with requests_mock.Mocker() as m:
        m.get(f"{BASE}/api/v1/42/crm/Accounts", json={"d": []})
        assert hook.get("crm/Accounts?$filter=Blocked%20eq%20false") == []


def test_query_encoding_keeps_odata_readable(hook):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", json={"d": []})
        hook.get("crm/Accounts", params={"$filter": "Name eq 'O''Brien'", "$select": "ID,Name", "$top": None})
        assert "$filter=Name%20eq%20'O''Brien'&$select=ID,Name" in m.last_request.url


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, ExactOnlineBadRequest), (403, ExactOnlineAuthError), (404, ExactOnlineNotFound)],
)
def test_client_errors_are_typed_and_never_retried(hook, status, cls):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", status_code=status, json=_err("Nope: bad thing"), headers={"Reason": "Why"})
        with pytest.raises(cls) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert m.call_count == 1
    err = info.value
    assert err.status_code == status
    assert err.exact_message == "Nope: bad thing"
    assert err.reason == "Why"
    assert "Nope: bad thing" in str(err) and "Reason: Why" in str(err)


def test_validation_messages_reach_the_caller_unredacted(hook):
    exact = "PostalCode=1234AB invalid; VATCode: 21 unknown; Code: 1001 already exists"
    with requests_mock.Mocker() as m:
        m.post(f"{API}/crm/Accounts", status_code=400, json=_err(exact))
        with pytest.raises(ExactOnlineBadRequest) as info:
            hook.create("crm/Accounts", {"Code": "1001", "Name": "Acme"})
    assert exact in str(info.value)


def test_401_swaps_token_once_then_succeeds(hook):
    with requests_mock.Mocker() as m:
        m.get(
            f"{API}/crm/Accounts",
            [{"status_code": 401, "json": _err("token expired")}, {"json": {"d": []}}],
        )
        assert hook.get("crm/Accounts?$filter=Blocked%20eq%20false") == []
        assert [r.headers["Authorization"] for r in m.request_history] == [
            "Bearer tok-one-aaaaaaaa",
            "Bearer tok-two-bbbbbbbb",
        ]
    assert hook.token_manager.unauthorized_calls == ["tok-one-aaaaaaaa"]


def test_401_twice_raises_without_looping(hook):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", status_code=401, json=_err("Unauthorized"))
        with pytest.raises(ExactOnlineAuthError) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert m.call_count == 2
    assert info.value.status_code == 401
    assert len(hook.token_manager.unauthorized_calls) == 1


def test_401_with_same_token_is_not_retried(env_conns, manual_clock):
    set_connection("eo_same", host="nl", extra={"division": DIVISION})
    hook = ExactOnlineHook("eo_same", clock=manual_clock)
    hook.__dict__["token_manager"] = StandInTokenManager(["only-token-cccc"])
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", status_code=401, json=_err("Unauthorized"))
        with pytest.raises(ExactOnlineAuthError):
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert m.call_count == 1


def test_get_retried_on_5xx_with_backoff_on_the_clock(hook, manual_clock):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", [{"status_code": 503, "text": "busy"}, {"status_code": 500}, {"json": {"d": []}}])
        assert hook.get("crm/Accounts?$filter=Blocked%20eq%20false") == []
        assert m.call_count == 3
    assert len(manual_clock.sleeps) == 2 and all(s > 0 for s in manual_clock.sleeps)


def test_5xx_after_retries_is_server_error(hook):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", status_code=502, text="<html><body><h1>Bad gateway</h1></body></html>")
        with pytest.raises(ExactOnlineServerError) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert m.call_count == 3  # max_retries=2
    assert "Bad gateway" in str(info.value) and info.value.status_code == 502


def test_post_never_resent_after_5xx_or_read_timeout(hook):
    with requests_mock.Mocker() as m:
        m.post(f"{API}/crm/Accounts", status_code=500, json=_err("boom"))
        with pytest.raises(ExactOnlineServerError):
            hook.request("POST", "crm/Accounts", json={"Name": "x"})
        assert m.call_count == 1
    with requests_mock.Mocker() as m:
        m.post(f"{API}/crm/Accounts", exc=requests.exceptions.ReadTimeout("read timed out"))
        with pytest.raises(ExactOnlineServerError, match="not re-sent"):
            hook.request("POST", "crm/Accounts", json={"Name": "x"})
        assert m.call_count == 1
    with requests_mock.Mocker() as m:
        m.post(f"{API}/crm/Accounts", exc=requests.ConnectionError("Connection aborted: RemoteDisconnected"))
        with pytest.raises(ExactOnlineServerError, match="not re-sent"):
            hook.request("POST", "crm/Accounts", json={"Name": "x"})
        assert m.call_count == 1


def test_post_retried_when_connection_never_opened(hook):
    refused = requests.ConnectionError(
        MaxRetryError(None, "/x", NewConnectionError(None, "Failed to establish a new connection: refused"))
    )
    with requests_mock.Mocker() as m:
        m.post(f"{API}/crm/Accounts", [{"exc": refused}, {"exc": requests.ConnectTimeout("t")}, {"json": {"d": {}}}])
        hook.request("POST", "crm/Accounts", json={"Name": "x"})
        assert m.call_count == 3


def test_get_retried_on_read_timeout(hook):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", [{"exc": requests.exceptions.ReadTimeout("slow")}, {"json": {"d": []}}])
        assert hook.get("crm/Accounts?$filter=Blocked%20eq%20false") == []


def test_html_body_is_response_error_with_redacted_snippet(hook):
    page = (
        "<html><head><title>Log in</title></head><body>Authorization: Bearer tok-one-aaaaaaaa "
        f"client_secret={CLIENT_SECRET} please log in</body></html>"
    )
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", text=page, headers={"Content-Type": "text/html"})
        with pytest.raises(ExactOnlineResponseError) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
    message = str(info.value)
    assert "Log in" in message and "text/html" in message
    assert "tok-one-aaaaaaaa" not in message and CLIENT_SECRET not in message


def test_redirect_is_response_error(hook):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", status_code=302, headers={"Location": f"{BASE}/docs/Login.aspx?x=1"})
        with pytest.raises(ExactOnlineResponseError, match=r"Login\.aspx"):
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")


def test_token_never_sent_to_another_host(hook):
    with requests_mock.Mocker() as m, pytest.raises(ExactOnlineConfigError, match="must not leave"):
        hook.get("https://evil.example.com/api/v1/1/crm/Accounts")
    assert m.call_count == 0


# ---------------------------------------------------------------- rate limits


def _limits(now: float, *, daily: int = 1000, minutely: int = 10, daily_reset: float | None = None) -> dict:
    minute_reset = (now // 60 + 1) * 60
    return {
        "X-RateLimit-Limit": "5000",
        "X-RateLimit-Remaining": str(daily),
        "X-RateLimit-Reset": str(int((daily_reset or now + 3600) * 1000)),
        "X-RateLimit-Minutely-Limit": "60",
        "X-RateLimit-Minutely-Remaining": str(minutely),
        "X-RateLimit-Minutely-Reset": str(int(minute_reset * 1000)),
    }


def test_waits_for_minutely_reset_before_calling(hook, manual_clock):
    now = manual_clock.now
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", json={"d": []}, headers=_limits(now, minutely=0))
        hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert manual_clock.sleeps == []
        hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert m.call_count == 2
    reset = (now // 60 + 1) * 60
    assert manual_clock.sleeps and manual_clock.now >= reset
    assert hook.rate_limit.minutely_reset == reset


def test_daily_limit_spent_raises_without_calling(hook, manual_clock):
    now = manual_clock.now
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", json={"d": []}, headers=_limits(now, daily=0, daily_reset=now + 7200))
        hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        with pytest.raises(ExactOnlineRateLimitExceeded) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert m.call_count == 1
    assert info.value.scope == "daily" and info.value.reset_at == pytest.approx(now + 7200, abs=0.01)


def test_429_waits_for_minutely_reset_and_retries(hook, manual_clock):
    now = manual_clock.now
    minutely_only = {k: v for k, v in _limits(now, minutely=0).items() if "Minutely" in k}
    with requests_mock.Mocker() as m:
        m.get(
            f"{API}/crm/Accounts",
            [{"status_code": 429, "headers": minutely_only, "text": ""}, {"json": {"d": []}}],
        )
        assert hook.get("crm/Accounts?$filter=Blocked%20eq%20false") == []
        assert m.call_count == 2
    assert manual_clock.now >= (now // 60 + 1) * 60


def test_429_without_headers_waits_to_next_minute_bounded(hook, manual_clock):
    manual_clock.now = 1_800_000_030.0  # half past a minute
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", status_code=429, text="Too many")
        with pytest.raises(ExactOnlineRateLimitExceeded) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert m.call_count == 4  # first try + 3 waits
    assert info.value.scope == "minutely" and info.value.status_code == 429
    assert all(0 < s <= 62 for s in manual_clock.sleeps) and len(manual_clock.sleeps) == 3


def test_missing_headers_are_unknown_not_zero(hook, manual_clock):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", json={"d": []})
        for _ in range(3):
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
    assert manual_clock.sleeps == []
    assert hook.rate_limit.minutely_remaining is None and hook.rate_limit.daily_remaining is None


# ---------------------------------------------------------------- helpers


def test_redact_and_snippet():
    text = 'Authorization: Bearer abc.def-123 {"refresh_token": "r3fr3sh", "x": 1} code=zzz&client_secret=qq'
    out = redact(text, ["abc.def-123"])
    assert not re.search(r"abc\.def|r3fr3sh|qq\b", out)
    assert "code=zzz" in out  # outside OAuth, 'code' is an ordinary field
    assert "zzz" not in redact(text, oauth=True)  # an authorization code in a redirect or token request


def test_redact_keeps_exacts_validation_messages():
    message = "PostalCode=1234AB invalid; VATCode: 21 unknown; Code: 1001 already exists; password=hunter22"
    assert redact(message) == (
        "PostalCode=1234AB invalid; VATCode: 21 unknown; Code: 1001 already exists; password=***"
    )
    assert len(snippet("<p>" + "x " * 500 + "</p>")) == 200
    assert json.dumps(snippet("<b>a</b>\n\n b")) == '"a b"'


# ---------------------------------------------------------------- entity methods


def test_iter_pages_follows_next_verbatim_and_stops_at_top(hook):
    next_url = f"{API}/sync/CRM/Accounts?$select=ID,Name&$skiptoken=guid'abc'&weird=%2F"
    with requests_mock.Mocker() as m:
        m.get(
            f"{API}/sync/CRM/Accounts?$select=ID,Name",
            json={"d": {"results": [{"ID": 1}, {"ID": 2}], "__next": next_url}},
        )
        m.get(next_url, complete_qs=True, json={"d": {"results": [{"ID": 3}, {"ID": 4}], "__next": next_url + "x"}})
        pages = list(hook.iter_pages("sync/crm/accounts", select=["id", "NAME"], top=3))
        assert [r.url for r in m.request_history][1] == next_url
        assert m.call_count == 2
    assert pages == [[{"ID": 1}, {"ID": 2}], [{"ID": 3}]]
    assert "$select=ID,Name" in m.request_history[0].url  # catalog spelling


def test_misspelled_field_raises_before_any_request(hook):
    from airflow_provider_exactonline.exceptions import ExactOnlineUnknownEntity, ExactOnlineUnknownField

    with requests_mock.Mocker() as m:
        with pytest.raises(ExactOnlineUnknownField, match="Nmae"):
            hook.iter_records("crm/Accounts", select="ID,Nmae")
        with pytest.raises(ExactOnlineUnknownField, match="Nmae"):
            hook.count("Accounts", filter="Nmae eq 'x'")
        with pytest.raises(ExactOnlineUnknownEntity, match="Acounts"):
            hook.get_record("crm/Acounts", "b0e2c7b4-0000-4000-8000-000000000001")
        assert m.call_count == 0


def test_raw_path_the_catalog_lacks_still_works(hook):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/custom/Things?$select=Whatever", json={"d": {"results": [{"Whatever": 1}]}})
        assert list(hook.iter_records("/custom/Things", select="Whatever")) == [{"Whatever": 1}]


def test_record_crud_and_count(hook):
    guid = "b0e2c7b4-0000-4000-8000-000000000001"
    key = f"{API}/crm/Accounts(guid'{guid}')"
    with requests_mock.Mocker() as m:
        m.get(key, json={"d": {"ID": guid, "Name": "A"}})
        m.post(f"{API}/crm/Accounts", status_code=201, json={"d": {"ID": guid, "Name": "A"}})
        m.put(key, status_code=204)
        m.delete(key, status_code=204)
        m.get(f"{API}/crm/Accounts/$count", text="42")
        assert hook.get_record("Accounts", guid, select="Name") == {"ID": guid, "Name": "A"}
        assert m.last_request.qs == {"$select": ["name"]}
        assert hook.create("Accounts", {"Name": "A"}) == {"ID": guid, "Name": "A"}
        assert m.last_request.headers["Prefer"] == "return=representation"
        assert m.last_request.json() == {"Name": "A"}
        assert hook.update("sync/CRM/Accounts", guid, {"Name": "B"}) is None
        assert m.last_request.method == "PUT" and m.last_request.url == key
        assert hook.delete("Accounts", guid) is None
        assert hook.count("Accounts", filter="name eq 'A'") == 42
        assert "$filter=Name%20eq%20'A'" in m.last_request.url


def test_iter_records_convert_dates_is_opt_in(hook):
    with requests_mock.Mocker() as m:
        m.get(f"{API}/crm/Accounts", json={"d": {"results": [{"Created": "/Date(1641034800000)/"}]}})
        raw = next(hook.iter_records("Accounts", filter="Blocked eq false"))
        converted = next(hook.iter_records("Accounts", filter="Blocked eq false", convert_dates=True))
    assert raw["Created"] == "/Date(1641034800000)/"
    assert converted["Created"].isoformat() == "2022-01-01T11:00:00+01:00"


def test_divisions_uses_me_current_division_without_default(env_conns, manual_clock):
    set_connection("eo_nodiv", host="nl")
    hook = ExactOnlineHook("eo_nodiv", clock=manual_clock)
    hook.__dict__["token_manager"] = StandInTokenManager(["tok-one-aaaaaaaa"])
    with requests_mock.Mocker() as m:
        m.get(f"{BASE}/api/v1/current/Me", json={"d": {"results": [{"CurrentDivision": 99, "FullName": "Jo"}]}})
        m.get(f"{BASE}/api/v1/99/system/Divisions", json={"d": {"results": [{"Code": 99}, {"Code": 100}]}})
        assert hook.divisions() == [{"Code": 99}, {"Code": 100}]
        assert hook.test_connection() == (True, f"Connected to {BASE} as Jo (current division 99)")
        with pytest.raises(ExactOnlineConfigError, match="no default division"):
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")


def test_test_connection_reports_failure(hook):
    with requests_mock.Mocker() as m:
        m.get(f"{BASE}/api/v1/current/Me", status_code=403, json=_err("Forbidden"))
        ok, message = hook.test_connection()
    assert ok is False and "403" in message and "Forbidden" in message


def test_token_swap_happens_once_per_request_even_across_5xx_retries(hook):
    with requests_mock.Mocker() as m:
        m.get(
            f"{API}/crm/Accounts",
            [
                {"status_code": 401, "json": _err("Unauthorized")},
                {"status_code": 503, "text": "busy"},
                {"status_code": 401, "json": _err("Unauthorized")},
                {"json": {"d": []}},
            ],
        )
        with pytest.raises(ExactOnlineAuthError):
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert m.call_count == 3
    assert len(hook.token_manager.unauthorized_calls) == 1


@pytest.mark.parametrize(
    ("path", "plain"),
    [
        ("crm/Accounts?$select=ID,Name&$filter=Blocked%20eq%20false&$skiptoken=guid'a-1'", True),  # sent as it is
        ("crm/Accounts?$filter=Name eq 'Caf\u00e9 Bar'", False),  # a space and non-ASCII: requests encodes it
    ],
)
def test_a_call_sends_what_requests_would_prepare(hook, path, plain):
    """The prepared request (built directly for plain URLs, see ApiCalls._prepare) matches requests' own."""
    assert bool(_PLAIN_URL.fullmatch(hook.url(path))) is plain
    hook.session.cookies.set("affinity", "node-7", domain="start.exactonline.nl")
    with requests_mock.Mocker() as m:
        m.get(re.compile(re.escape(f"{API}/crm/Accounts")), json={"d": {"results": []}})
        m.post(f"{API}/crm/Accounts", json={"d": {"ID": "x"}}, status_code=201)
        hook.request("GET", path, params={"$top": 5})
        hook.request("POST", "crm/Accounts", json={"Name": "Caf\u00e9"})
    expected = hook.session.prepare_request(
        requests.Request(
            "GET",
            hook.url(path) + "&$top=5",
            headers={"Authorization": "Bearer tok-one-aaaaaaaa"},
        )
    )
    sent, posted = m.request_history
    assert sent.url == expected.url
    assert dict(sent.headers) == {**dict(expected.headers), **dict(sent.headers)}
    assert sent.headers["Cookie"] == "affinity=node-7"  # the session's cookies still go along
    assert sent.headers["Accept"] == "application/json"
    assert posted.json() == {"Name": "Caf\u00e9"} and posted.headers["Content-Type"] == "application/json"
