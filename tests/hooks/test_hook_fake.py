"""ExactOnlineHook over real HTTP against the fake Exact Online server, with the real token manager.

Every exception class of the provider is provoked here through the fake (see test names ``test_raises_*``).
"""

from __future__ import annotations

import logging
import time

import pytest
from hook_support import CLIENT_ID, CLIENT_SECRET, fake_hook, set_connection, token_extras

from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.auth.token_stores import InMemoryTokenStore
from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.exceptions import (
    ExactOnlineAuthError,
    ExactOnlineBadRequest,
    ExactOnlineConfigError,
    ExactOnlineNotFound,
    ExactOnlineRateLimitExceeded,
    ExactOnlineReauthorizationRequired,
    ExactOnlineResponseError,
    ExactOnlineServerError,
    ExactOnlineUnknownEntity,
    ExactOnlineUnknownField,
)
from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
from airflow_provider_exactonline.testing import FakeExactOnline

DIVISION = 1001  # the fake's first division
ACCOUNT_FIELDS = "ID,Code,Name,Created,Modified"
#: Exact's mandatory filtering refuses an unfiltered collection read of crm/Accounts; this filter keeps every row.
EVERY_ACCOUNT = "Blocked eq false"


pytestmark = pytest.mark.usefixtures("env_conns")


# ---------------------------------------------------------------- paging, memory, rate limits


def test_100k_sync_rows_take_exactly_100_calls():
    with fake_hook(rows={"sync/CRM/Accounts": 100_000}, daily_limit=None) as (fake, hook, _):
        seen = 0
        last_timestamp = -1
        for page in hook.iter_pages("sync/CRM/Accounts", select="ID,Timestamp"):
            assert len(page) <= 1000
            seen += len(page)
            assert page[-1]["Timestamp"] > last_timestamp
            last_timestamp = page[-1]["Timestamp"]
        assert seen == 100_000
        assert fake.count_requests("sync/CRM/Accounts") == 100
        assert hook.api_calls == 100
        # __next was followed verbatim: every call after the first carries the server's $skiptoken.
        # (A token refresh may come in between when the machine is slow: the fake's clock runs 60x.)
        queries = [r.query for r in fake.requests if r.path.endswith("/sync/CRM/Accounts")]
        assert "$skiptoken" not in queries[0] and all("$skiptoken=" in q for q in queries[1:]), [
            (r.path, r.query) for r in fake.requests if "$skiptoken=" not in r.query
        ]


def test_500_calls_with_minutely_limit_60_get_no_429():
    clock = ScaledClock(scale=120)
    with fake_hook(clock=clock, minutely_limit=60, daily_limit=5000, rows={"crm/Accounts": 5}) as (fake, hook, _):
        started = clock.time()
        for _ in range(500):
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$select": "ID", "$top": 1})
        elapsed = clock.time() - started
        assert fake.responses_429 == 0
        assert fake.count_requests("crm/Accounts") == 500 and hook.api_calls == 500
        # 500 calls at 60 a minute span at least 9 minute windows: the hook really waited.
        assert clock.time() // 60 - started // 60 >= 8
        assert elapsed > 7 * 60
        assert hook.rate_limit.daily_remaining == 4500


def test_iter_records_standard_pages_dates_and_top():
    with fake_hook(rows={"crm/Accounts": 150}) as (fake, hook, _):
        records = list(hook.iter_records("accounts", select=ACCOUNT_FIELDS.lower(), filter=EVERY_ACCOUNT))
        assert len(records) == 150 and fake.count_requests("crm/Accounts") == 3  # 60 per page
        assert records[0]["Created"].startswith("/Date(")  # lossless by default
        converted = next(hook.iter_records("Accounts", select="Created", filter=EVERY_ACCOUNT, convert_dates=True))
        assert converted["Created"].timezone_name == "Europe/Amsterdam"
        assert len(list(hook.iter_records("Accounts", select="ID", filter=EVERY_ACCOUNT, top=70))) == 70
        assert hook.count("Accounts", filter=EVERY_ACCOUNT) == 150
        assert hook.count("Accounts", filter=f"Code eq {records[0]['Code']!r}") == 1


def test_record_crud_round_trip():
    with fake_hook(rows={"crm/Accounts": 3}) as (fake, hook, _):
        created = hook.create("crm/Accounts", {"Name": "O'Brien & Co", "Code": "OBR1"})
        guid = created["ID"]
        assert created["Name"] == "O'Brien & Co" and "Created" in created  # Prefer: return=representation
        record = hook.get_record("Accounts", guid, select="Name,Code")
        assert (record["Name"], record["Code"].strip()) == ("O'Brien & Co", "OBR1")
        assert set(record) == {"__metadata", "Name", "Code"}
        hook.update("Accounts", guid, {"Name": "Renamed"})
        assert fake.get_record("crm/Accounts", guid)["Name"] == "Renamed"
        hook.delete("Accounts", guid)
        assert fake.get_record("crm/Accounts", guid) is None
        assert fake.record_count("crm/Accounts") == 3


def test_current_user_divisions_and_division_override():
    with fake_hook(division=None, rows={"crm/Accounts": 2}) as (fake, hook, _):
        assert hook.current_user()["CurrentDivision"] == DIVISION
        codes = [d["Code"] for d in hook.divisions()]
        assert DIVISION in codes and 1002 in codes
        assert fake.requests[-1].path == f"/api/v1/{DIVISION}/system/Divisions"
        list(hook.iter_records("Accounts", select="ID", filter=EVERY_ACCOUNT, division=1002))
        assert fake.requests[-1].division == 1002


def test_test_connection_persists_the_rotation_it_causes():
    clock = ScaledClock(scale=60)
    # The stored access token is inside its last 30 s: test_connection must refresh and persist.
    with fake_hook(clock=clock, expires_in=10) as (fake, hook, store):
        before = store.load()
        ok, message = hook.test_connection()
        assert ok, message
        assert "Fake User" in message
        after = store.load()
        assert after is not None and before is not None
        assert after.refresh_token == fake.current_refresh_token != before.refresh_token
        assert after.access_token == fake.current_access_token
        assert store.saves == 1 and len(fake.token_calls) == 1


def test_get_retries_a_dropped_response_but_post_is_never_resent():
    with fake_hook(rows={"crm/Accounts": 2}, hook_kwargs={"backoff_initial": 0.1}) as (fake, hook, _):
        fake.drop_next(1, path_contains="crm/Accounts")
        assert len(list(hook.iter_records("Accounts", select="ID", filter=EVERY_ACCOUNT))) == 2
        assert fake.count_requests("crm/Accounts", method="GET") == 2

        fake.drop_next(1, path_contains="crm/Accounts")  # processed, then the connection dies mid-answer
        with pytest.raises(ExactOnlineServerError, match="not re-sent"):
            hook.create("Accounts", {"Name": "Once only", "Code": "ONCE"})
        assert fake.count_requests("crm/Accounts", method="POST") == 1
        assert fake.record_count("crm/Accounts") == 3  # it did arrive, exactly once


def test_post_retried_when_the_server_cannot_be_reached(manual_clock):
    manual_clock.now = time.time()  # the fake below runs on the system clock
    with FakeExactOnline(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as fake:
        extras = token_extras(fake, fake.clock) | {"division": DIVISION}
        base_url = fake.base_url
    # The fake is stopped: the port refuses connections, so nothing can have been sent.
    set_connection("eo_down", host=base_url, extra=extras)
    hook = ExactOnlineHook(
        "eo_down", token_store=InMemoryTokenStore(TokenState.from_extras(extras)), clock=manual_clock, max_retries=2
    )
    with pytest.raises(ExactOnlineServerError, match="Could not reach"):
        hook.create("Accounts", {"Name": "x"})
    assert len(manual_clock.sleeps) == 2  # retried twice with backoff


# ---------------------------------------------------------------- every exception class through the fake


def test_raises_config_error_without_division_before_any_request():
    with fake_hook(division=None) as (fake, hook, _):
        with pytest.raises(ExactOnlineConfigError, match="no default division"):
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert fake.requests == []


def test_raises_config_error_for_a_bad_connection():
    with FakeExactOnline(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as fake:
        set_connection("eo_bad", host=fake.base_url, extra={"division": "one"})
        with pytest.raises(ExactOnlineConfigError, match="division must be a positive integer"):
            ExactOnlineHook("eo_bad").get("crm/Accounts")
        assert fake.requests == []


def test_raises_unknown_field_and_entity_before_any_request():
    with fake_hook(rows={"crm/Accounts": 2}) as (fake, hook, _):
        with pytest.raises(ExactOnlineUnknownField, match="Nmae"):
            hook.iter_records("crm/Accounts", select="ID,Nmae")
        with pytest.raises(ExactOnlineUnknownField, match="Cdoe"):
            hook.iter_pages("sync/CRM/Accounts", select="ID", filter="Cdoe eq 'x'")
        with pytest.raises(ExactOnlineUnknownEntity, match="Acounts"):
            hook.count("crm/Acounts")
        assert fake.requests == []


def test_raises_bad_request_with_exacts_message():
    with fake_hook() as (fake, hook, _):
        with pytest.raises(ExactOnlineBadRequest) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$filter": "Name eq"})
        assert info.value.status_code == 400 and info.value.exact_message
        assert info.value.exact_message in str(info.value)
        assert fake.count_requests("crm/Accounts") == 1  # never retried


def test_raises_not_found_for_a_missing_record():
    with fake_hook(rows={"crm/Accounts": 1}) as (fake, hook, _):
        with pytest.raises(ExactOnlineNotFound) as info:
            hook.get_record("Accounts", "00000000-0000-4000-8000-000000000000")
        assert info.value.status_code == 404
        assert fake.count_requests("crm/Accounts") == 1


def test_raises_auth_error_on_403_without_retry():
    with fake_hook() as (fake, hook, _):
        with pytest.raises(ExactOnlineAuthError) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false", division=999)  # the fake has no division 999
        assert info.value.status_code == 403 and "division" in str(info.value)
        assert fake.count_requests("crm/Accounts") == 1


def test_raises_auth_error_when_a_valid_token_is_refused():
    with fake_hook() as (fake, hook, _):
        fake.fail_next(2, status=401)
        with pytest.raises(ExactOnlineAuthError) as info:
            hook.current_user()
        assert info.value.status_code == 401
        assert fake.count_requests("current/Me") <= 2  # at most the one swap retry
        assert fake.token_calls == []  # a valid token is not refreshed on a 401


def test_401_for_an_expired_token_refreshes_and_retries_once():
    clock = ScaledClock(scale=60)
    with fake_hook(clock=clock) as (fake, hook, store):
        hook.current_user()
        clock.advance(601)  # the token has expired on the server (and the manager's state says so too)
        hook.current_user()
        assert len(fake.token_calls) == 1 and store.load().access_token == fake.current_access_token


def test_raises_reauthorization_required_when_the_refresh_token_is_dead(monkeypatch):
    monkeypatch.setenv("AIRFLOW__EXACTONLINE__TOKEN_REUSE_POLL_SECONDS", "0.2")
    with fake_hook(expires_in=0) as (fake, hook, _):
        fake.issue_tokens()  # someone re-authorized elsewhere: our refresh token is now an old one
        with pytest.raises(ExactOnlineReauthorizationRequired) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert "eo_fake" in str(info.value) and "authorize" in str(info.value)
        assert fake.count_requests("crm/Accounts") == 0


def test_raises_rate_limit_exceeded_daily_without_calling():
    with fake_hook(daily_limit=3) as (fake, hook, _):
        for _ in range(3):
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$top": 1})
        with pytest.raises(ExactOnlineRateLimitExceeded) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$top": 1})
        assert info.value.scope == "daily"
        assert info.value.reset_at is not None and info.value.reset_at > hook.clock.time()
        assert info.value.reset_at % 86_400 == 0  # the fake's day boundary (UTC midnight)
        assert fake.count_requests("crm/Accounts") == 3 and fake.responses_429 == 0


def test_raises_rate_limit_exceeded_minutely_after_bounded_waits():
    clock = ScaledClock(scale=3000)
    with fake_hook(clock=clock) as (fake, hook, _):
        fake.fail_next(10, status=429)  # bare 429s without headers, as Exact sometimes sends
        started = clock.time()
        with pytest.raises(ExactOnlineRateLimitExceeded) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert info.value.scope == "minutely" and info.value.status_code == 429
        assert fake.count_requests("crm/Accounts") == 4  # 1 + 3 bounded retries
        assert clock.time() // 60 - started // 60 >= 3  # each of the 3 waits ran past a whole minute


def test_429_then_success_waits_for_the_minutely_reset():
    clock = ScaledClock(scale=600)
    with fake_hook(clock=clock) as (fake, hook, _):
        fake.fail_next(1, status=429)
        minute = clock.time() // 60
        hook.get("crm/Accounts?$filter=Blocked%20eq%20false", params={"$top": 1})
        assert clock.time() // 60 > minute
        assert fake.count_requests("crm/Accounts") == 2


def test_raises_server_error_after_retries_for_get_and_at_once_for_post():
    with fake_hook(hook_kwargs={"max_retries": 2, "backoff_initial": 0.1}) as (fake, hook, _):
        fake.fail_next(3, status=503)
        with pytest.raises(ExactOnlineServerError) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        assert info.value.status_code == 503 and fake.count_requests("crm/Accounts") == 3
        fake.fail_next(1, status=500)
        with pytest.raises(ExactOnlineServerError):
            hook.create("Accounts", {"Name": "x"})
        assert fake.count_requests("crm/Accounts", method="POST") == 1


def test_raises_response_error_for_html_with_a_short_snippet():
    with fake_hook() as (fake, hook, _):
        fake.html_error_next(1, status=200)
        with pytest.raises(ExactOnlineResponseError) as info:
            hook.get("crm/Accounts?$filter=Blocked%20eq%20false")
        message = str(info.value)
        assert "not JSON" in message and "text/html" in message and "<" not in message.split("):", 1)[1]
        assert len(message) < 500
        assert fake.count_requests("crm/Accounts") == 1


# ---------------------------------------------------------------- secrets


def test_no_secret_or_token_reaches_the_logs(caplog, capfd):
    """A run with a refresh, a retry and an error, at DEBUG for every logger (incl. urllib3, oauthlib).

    Scans both stdlib logging (caplog: urllib3, requests_oauthlib, ...) and what structlog wrote to
    stdout/stderr (the hook's own ``self.log``; capfd).
    """
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "requests_oauthlib", "oauthlib", "airflow_provider_exactonline"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    clock = ScaledClock(scale=60)
    with fake_hook(clock=clock, rows={"crm/Accounts": 70}, expires_in=5, hook_kwargs={"backoff_initial": 0.1}) as (
        fake,
        hook,
        store,
    ):
        seed = store.load()
        fake.fail_next(1, status=503)  # -> a retry
        assert (
            len(list(hook.iter_records("Accounts", select="ID,Name", filter=EVERY_ACCOUNT))) == 70
        )  # -> a refresh first
        with pytest.raises(ExactOnlineNotFound):  # -> an error
            hook.get_record("Accounts", "00000000-0000-4000-8000-000000000000")
        assert hook.test_connection()[0]
        assert len(fake.token_calls) == 1 and fake.count_requests() >= 5
        secrets = {CLIENT_SECRET, seed.access_token, seed.refresh_token}
        for pair in fake.token_chain:
            secrets |= {pair["access_token"], pair["refresh_token"]}
    secrets.discard(None)
    assert len(secrets) >= 5
    out, err = capfd.readouterr()
    text = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records) + out + err
    assert "urllib3" in {r.name.split(".")[0] for r in caplog.records}  # the scan saw HTTP-level logs
    assert "retrying in" in text and "/api/oauth2/token" in text  # ... the hook's retry and the refresh
    leaked = [s[:6] + "..." for s in secrets if s in text]
    assert leaked == []
