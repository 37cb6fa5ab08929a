"""The page inside Airflow's UI (fragments for the React app, flows that return there) and its wording."""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from airflow_provider_exactonline.health import ConnectionHealth
from airflow_provider_exactonline.plugins.views import EMBED_HEADER, FRAGMENT_HEADER, budget_rows, status_notes

CONN = "exact_views"
FRAGMENT = {EMBED_HEADER: "1", "Accept": "text/html"}
HTML = {"Accept": "text/html"}


def _health(**fields: Any) -> ConnectionHealth:
    base: dict[str, Any] = {"conn_id": CONN, "conn_type": "exactonline", "status": "ok", "summary": "authorized"}
    return ConnectionHealth(**{"authorized": True, **base, **fields})


def _status_cell(page: str, conn_id: str) -> str:
    row = re.search(rf'<tr data-conn-id="{conn_id}">(.*?)</tr>', page, re.S)
    assert row is not None, page
    cell = re.search(r'<td class="status">(.*?)</td>', row.group(1), re.S)
    assert cell is not None
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell.group(1))).split())


def _approve(auth_url: str) -> str:
    response = requests.get(auth_url, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["Location"])
    return f"{location.path}?{location.query}"


def _authorize_embedded(client: Any, headers: dict[str, str]) -> str:
    response = client.get(
        f"/exactonline/connections/{CONN}/authorize", params={"embedded": "1"}, headers=headers, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


# ---------------------------------------------------------------------------------------------- unit


def test_status_notes_never_repeat_the_badge() -> None:
    assert status_notes(_health(division=1001), []) == []
    assert status_notes(_health(status="not_authorized", summary="not authorized yet: click Connect"), []) == []
    error = status_notes(
        _health(status="error", summary="the last token refresh failed: boom", last_refresh_error="boom"), []
    )
    assert [note["text"] for note in error] == ["Last refresh error: boom"]
    broken = status_notes(
        _health(status="misconfigured", summary="no client id", problems=("no client id", "no host")), []
    )
    assert [note["text"] for note in broken] == ["no client id", "no host"]
    no_division = status_notes(_health(), [])
    assert len(no_division) == 1 and "No default division" in no_division[0]["text"]
    warned = status_notes(_health(division=1), ["Refresh token unused for 14 days"])
    assert warned == [{"kind": "warn", "text": "Refresh token unused for 14 days"}]


def test_budget_rows_print_missing_values_as_a_dash() -> None:
    rows = budget_rows(
        [
            {
                "division": 1001,
                "calls_today": 120,
                "remaining_today": None,
                "limit_today": 5000,
                "resets_at_iso": "2026-12-03T00:00:00+01:00",
                "reserve": None,
                "deferred": ["sync.export_accounts"],
            },
            "not a dict",
        ]
    )
    assert rows == [
        {
            "division": "1001",
            "calls_today": "120",
            "remaining_today": "-",
            "limit_today": "5000",
            "resets_at": "2026-12-02 23:00 UTC",
            "reserve": "-",
            "deferred": ["sync.export_accounts"],
        }
    ]
    assert budget_rows(None) == [] and budget_rows([]) == []


# ---------------------------------------------------------------------------------------------- through the app


def test_fragment_for_the_react_app_links_inside_airflows_ui(client: Any, auth: Any, conns: Any, fake: Any) -> None:
    conns.put(CONN, host=fake.base_url)
    whole = client.get("/exactonline/", headers={**auth["admin"], **HTML})
    fragment = client.get("/exactonline/", headers={**auth["admin"], **FRAGMENT})
    assert whole.status_code == fragment.status_code == 200
    assert whole.text.startswith("<!doctype html>") and "Open inside Airflow" in whole.text
    assert "<html" not in fragment.text and 'class="eo eo-embedded"' in fragment.text
    assert f'href="/exactonline/connections/{CONN}/authorize?embedded=1"' in fragment.text
    assert f'href="/exactonline/connections/{CONN}/authorize"' in whole.text
    assert fragment.headers[FRAGMENT_HEADER] == "1" and FRAGMENT_HEADER not in whole.headers
    denied = client.get("/exactonline/", headers=FRAGMENT)  # errors are fragments too (the app shows them)
    assert denied.status_code == 401 and denied.headers[FRAGMENT_HEADER] == "1"
    assert "/api/v2/auth/login?next=%2Fplugin%2Fexactonline%2F" in denied.text
    assert EMBED_HEADER in fragment.headers["vary"] and fragment.headers["cache-control"] == "no-store"


def test_connect_started_inside_the_ui_returns_there(client: Any, auth: Any, conns: Any, fake: Any) -> None:
    conns.put(CONN, host=fake.base_url)
    callback = _approve(_authorize_embedded(client, auth["admin"]))
    landed = client.get(callback, headers={**auth["admin"], **HTML}, follow_redirects=False)
    assert landed.status_code == 303
    target = urlsplit(landed.headers["location"])
    assert target.path == "/plugin/exactonline/"
    saved = parse_qs(target.query)["saved"][0]
    assert saved.startswith(f"Connection {CONN} is connected to Exact Online as Fake User.")
    assert "Default division set to 1001 (Fake Company NL)" in saved
    stored = conns.extras(CONN)
    assert stored["refresh_token"] == fake.current_refresh_token and stored["division"] == 1001
    assert stored["refresh_token"] not in landed.headers["location"]

    # The React app forwards that query: the fragment says it once, and links the division chooser in the UI.
    page = client.get(f"/exactonline/?{target.query}", headers={**auth["admin"], **FRAGMENT})
    assert page.text.count("is connected to Exact Online as Fake User") == 1
    assert f'href="/plugin/exactonline/connections/{CONN}/division"' in page.text
    assert _status_cell(page.text, CONN) == "Authorized"

    chooser = client.get(f"/exactonline/connections/{CONN}/division", headers={**auth["admin"], **FRAGMENT})
    assert '<input type="hidden" name="embedded" value="true">' in chooser.text
    posted = client.post(
        f"/exactonline/connections/{CONN}/division",
        data={"division": "1002", "embedded": "true"},
        headers=auth["admin"],
        follow_redirects=False,
    )
    assert posted.status_code == 303
    back = urlsplit(posted.headers["location"])
    assert back.path == "/plugin/exactonline/"
    assert parse_qs(back.query)["saved"] == [f"Default division of {CONN} set to 1002 (Fake Company BE)."]
    assert conns.extras(CONN)["division"] == 1002


def test_denied_inside_the_ui_shows_the_reason_there(client: Any, auth: Any, conns: Any, fake: Any) -> None:
    conns.put(CONN, host=fake.base_url)
    fake.auto_approve = False
    consent = requests.get(_authorize_embedded(client, auth["admin"]), timeout=10)
    form = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', consent.text))
    denied = requests.post(fake.auth_url, data={**form, "action": "deny"}, allow_redirects=False, timeout=10)
    location = urlsplit(denied.headers["Location"])
    landed = client.get(f"{location.path}?{location.query}", headers={**auth["admin"], **HTML}, follow_redirects=False)
    assert landed.status_code == 303
    target = urlsplit(landed.headers["location"])
    assert target.path == "/plugin/exactonline/"
    page = client.get(f"/exactonline/?{target.query}", headers={**auth["admin"], **FRAGMENT})
    failure = re.search(r'<div class="notice error" role="alert" id="failure">(.*?)</div>', page.text, re.S)
    assert failure is not None
    text = html.unescape(failure.group(1))
    assert "Exact Online refused" in text and "Access was not granted" in text
    assert "Exact said: access_denied." in text and "access_denied:" not in text
    assert "access_token" not in conns.extras(CONN)


def test_misconfigured_row_links_to_its_connection_and_offers_no_connect(
    client: Any, auth: Any, conns: Any, fake: Any
) -> None:
    conns.put("exact_views_broken", host=fake.base_url, login="")
    page = client.get("/exactonline/", headers={**auth["admin"], **FRAGMENT}).text
    row = re.search(r'<tr data-conn-id="exact_views_broken">(.*?)</tr>', page, re.S)
    assert row is not None
    assert 'href="/connections?name_pattern=exact_views_broken">Fix the connection</a>' in row.group(1)
    assert "/authorize" not in row.group(1)
    cell = _status_cell(page, "exact_views_broken")
    assert cell.startswith("Misconfigured ") and "Client ID" in cell
    assert cell.count("Client ID") == 1  # the problem is said once, not as summary and again as problem


def test_status_cell_says_each_thing_once(client: Any, auth: Any, conns: Any, fake: Any) -> None:
    now = time.time()
    tokens = {"access_token": "AT-x", "refresh_token": "RT-x", "token_obtained_at": now - 60}
    conns.put(CONN, host=fake.base_url, extra={**tokens, "token_expires_at": now + 500, "division": 1001})
    conns.put("exact_views_failed", host=fake.base_url, extra={**tokens, "last_refresh_error": "invalid_grant"})
    conns.put("exact_views_new", host=fake.base_url)
    page = client.get("/exactonline/", headers={**auth["admin"], **HTML}).text
    assert _status_cell(page, CONN) == "Authorized"
    assert _status_cell(page, "exact_views_failed") == "Refresh failed Last refresh error: invalid_grant"
    assert _status_cell(page, "exact_views_new") == "Not connected"


def test_budget_and_idle_warnings_are_shown_when_health_has_them(
    client: Any, auth: Any, conns: Any, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_db import forget_exactonline_variables

    forget_exactonline_variables()  # budget ledgers earlier tests left for the fake's client id
    conns.put(CONN, host=fake.base_url)
    plain = client.get("/exactonline/", headers={**auth["admin"], **FRAGMENT}).text
    assert f'data-budget-for="{CONN}"' not in plain  # nothing when the health has no budget

    original = ConnectionHealth.to_dict

    def with_budget(self: ConnectionHealth) -> dict[str, Any]:
        data = original(self)
        data["warnings"] = ["The refresh token has not been used for 14 days; run a task or reconnect."]
        data["budget"] = [
            {
                "division": 1001,
                "calls_today": 4700,
                "remaining_today": 300,
                "limit_today": 5000,
                "resets_at_iso": "2026-12-03T00:00:00+00:00",
                "reserve": 250,
                "deferred": ["nightly.export_invoices", "nightly.export_items"],
            }
        ]
        return data

    monkeypatch.setattr(ConnectionHealth, "to_dict", with_budget)
    page = client.get("/exactonline/", headers={**auth["admin"], **FRAGMENT}).text
    assert "has not been used for 14 days" in _status_cell(page, CONN)
    budget = re.search(rf'<tr class="budget" data-budget-for="{CONN}">(.*?)</table>', page, re.S)
    assert budget is not None
    cells = re.findall(
        r"<td>(.*?)</td>", re.search(r'<tr data-division="1001">(.*?)</tr>', budget.group(1), re.S).group(1)
    )
    assert cells == [
        "1001",
        "4700",
        "300",
        "5000",
        "2026-12-03 00:00 UTC",
        "250",
        "nightly.export_invoices, nightly.export_items",
    ]
