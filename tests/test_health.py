"""Connection health (shared by the UI page and `airflow-exactonline status`): computed from the connection only."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from airflow.models.connection import Connection

from airflow_provider_exactonline.health import (
    REFRESH_TOKEN_LIFETIME_S,
    connection_health,
    format_health,
    human_duration,
    load_health,
)

NOW = 1_800_000_000.0
DAY = 86400.0


def conn(extra: dict[str, Any] | None = None, conn_type: str = "exactonline", **fields: Any) -> Connection:
    fields.setdefault("host", "nl")
    fields.setdefault("login", "client-id")
    fields.setdefault("password", "client-secret")
    return Connection(conn_id="exact", conn_type=conn_type, extra=json.dumps(extra or {}), **fields)


def tokens(age_days: float, **more: Any) -> dict[str, Any]:
    obtained = NOW - age_days * DAY
    return {
        "access_token": "AT-xyz-123",
        "refresh_token": "RT-xyz-123",
        "token_obtained_at": obtained,
        "token_expires_at": obtained + 600,
        **more,
    }


def test_not_authorized_with_derived_redirect_uri() -> None:
    health = connection_health(conn(), now=NOW, default_redirect_uri="https://af.example.com/exactonline/callback")
    assert health.status == "not_authorized" and not health.authorized and health.needs_action
    assert health.redirect_uri == "https://af.example.com/exactonline/callback"
    assert health.redirect_uri_source == "derived"
    assert health.base_url == "https://start.exactonline.nl"
    assert health.refresh_token_estimated_death is None


def test_ok_with_division_and_estimated_death() -> None:
    extra = {**tokens(2), "division": 1001, "division_name": "Acme NL", "redirect_uri": "http://127.0.0.1:8765/cb"}
    health = connection_health(conn(extra), now=NOW, default_redirect_uri="https://ignored/")
    assert health.status == "ok" and health.summary == "authorized" and not health.needs_action
    assert (health.division, health.division_name) == (1001, "Acme NL")
    assert health.refresh_token_age_s == pytest.approx(2 * DAY)
    assert health.refresh_token_estimated_death == pytest.approx(NOW - 2 * DAY + REFRESH_TOKEN_LIFETIME_S)
    assert (health.redirect_uri, health.redirect_uri_source) == ("http://127.0.0.1:8765/cb", "connection")
    data = health.to_dict()
    assert data["token_obtained_at_iso"].endswith("+00:00") and data["needs_action"] is False
    assert "xyz-123" not in json.dumps(data)  # no token in the health


@pytest.mark.parametrize(
    ("age_days", "status"), [(0, "ok"), (24.9, "ok"), (25.5, "expiring"), (29.9, "expiring"), (30.1, "expired")]
)
def test_refresh_token_age_thresholds(age_days: float, status: str) -> None:
    assert connection_health(conn({**tokens(age_days), "division": 1}), now=NOW).status == status


def test_last_refresh_error_wins_over_age() -> None:
    health = connection_health(conn(tokens(1, last_refresh_error="Old refresh token used.")), now=NOW)
    assert health.status == "error" and "Old refresh token used." in health.summary and health.needs_action


def test_no_default_division_is_mentioned() -> None:
    assert "no default division" in connection_health(conn(tokens(1)), now=NOW).summary


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"login": ""}, "'Client ID' (login) is empty"),
        ({"password": ""}, "'Client secret' (password) is empty"),
        ({"host": "mars"}, "unknown Exact Online region"),
        ({"extra": {"division": "abc"}}, "division must be a positive integer"),
    ],
)
def test_misconfigured_names_the_field(kwargs: dict[str, Any], needle: str) -> None:
    extra = kwargs.pop("extra", None)
    health = connection_health(conn(extra, **kwargs), now=NOW)
    assert health.status == "misconfigured" and needle in health.summary and needle in health.problems[0]


def test_wrong_type() -> None:
    health = connection_health(conn(conn_type="http"), now=NOW)
    assert health.status == "misconfigured" and "'Exact Online'" in health.problems[0]


def test_format_health_is_readable_and_secret_free() -> None:
    text = format_health(
        connection_health(conn({**tokens(3), "division": 7, "division_name": "Acme"}), now=NOW), now=NOW
    )
    assert "Status:            ok: authorized" in text
    assert "Division:          7 (Acme)" in text
    assert "Refresh token:     3 d 0 h old; estimated to expire" in text
    assert "Redirect URI:      none in the connection; the Exact Online page derives" in text  # not a problem
    assert "xyz-123" not in text and "client-secret" not in text


def test_human_duration() -> None:
    assert [human_duration(s) for s in (5, 125, 7260, 93784)] == ["5 s", "2 min", "2 h 1 min", "1 d 2 h"]


def test_load_health_prefers_the_newer_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers cannot write connections: a refresh on a worker lands in the Variable; health must see it."""
    from airflow_db import migrate

    from airflow_provider_exactonline.auth.token_state import TokenState
    from airflow_provider_exactonline.auth.token_stores import VariableTokenStore

    migrate()
    now = time.time()
    stale = conn({**tokens(0), "token_obtained_at": now - 20 * DAY, "division": 1})
    store = VariableTokenStore("exact", client_secret="client-secret")
    newer = TokenState(
        access_token="AT-new",
        refresh_token="RT-new",
        expires_at=now + 600,
        obtained_at=now - DAY,
        last_error="Old refresh token used.",
    )
    store.save(newer)
    try:
        health = load_health(stale, now=now)
        assert health.token_source == f"Variable {store.token_key}"
        assert health.refresh_token_age_s == pytest.approx(DAY, abs=5)
        assert health.status == "error" and "Old refresh token used." in health.summary
    finally:
        from airflow.models.variable import Variable

        Variable.delete(store.token_key)
    health = load_health(stale, now=now)
    assert health.token_source == "connection extras" and health.refresh_token_age_s == pytest.approx(20 * DAY)


@pytest.mark.parametrize(("age_days", "expected"), [(6.9, None), (7, "7 days"), (14.5, "14 days"), (28, "28 days")])
def test_idle_refresh_token_warnings_at_7_14_28_days(age_days: float, expected: str | None) -> None:
    health = connection_health(conn({**tokens(age_days), "division": 7}), now=NOW)
    data = health.to_dict()
    assert data["warnings"] == list(health.warnings) and data["budget"] == []
    if expected is None:
        assert health.warnings == ()
    else:
        (warning,) = health.warnings
        assert f"not been used for {expected}" in warning and "exactonline_keep_alive" in warning
        assert ("reconnect" in warning) == (age_days >= 28)
        assert f"Warning:           {warning}" in format_health(health, now=NOW)


def test_load_health_reports_todays_budget_from_the_ledger() -> None:
    """The ledger the workers keep (here the Variable) shows up in to_dict()["budget"] and in the status text."""
    from airflow_db import migrate

    from airflow_provider_exactonline.auth.variable_store import _variables
    from airflow_provider_exactonline.budget.ledger import DocumentLedger
    from airflow_provider_exactonline.ratelimit import RateLimitState

    migrate()
    now = time.time()
    reset = (now // DAY + 1) * DAY

    class Clock:
        def time(self) -> float:
            return now

    ledger = DocumentLedger("client-id", Clock(), 0.10, variables=_variables())
    ledger.observe(7, RateLimitState(5000, 1200, reset))
    ledger.record_deferred(7, "mirror.accounts until tomorrow: needs about 800 calls")
    ledger.observe(8, RateLimitState(5000, 4990, reset))
    try:
        health = load_health(conn({**tokens(1), "division": 7}), now=now)
        budget = health.to_dict()["budget"]
        assert [entry["division"] for entry in budget] == [7, 8]  # the connection's division first
        first = budget[0]
        assert set(first) == {
            "division",
            "calls_today",
            "remaining_today",
            "limit_today",
            "resets_at_iso",
            "reserve",
            "deferred",
        }
        assert (first["calls_today"], first["remaining_today"], first["limit_today"], first["reserve"]) == (
            3800,
            1200,
            5000,
            500,
        )
        assert first["resets_at_iso"].endswith("T00:00:00+00:00")
        assert first["deferred"] == ["mirror.accounts until tomorrow: needs about 800 calls"]
        text = format_health(health, now=now)
        assert "API budget 7:  3800 of 5000 calls today, 1200 left (reserve 500)" in text
        assert "deferred:        mirror.accounts until tomorrow" in text
    finally:
        from airflow.models.variable import Variable

        Variable.delete(ledger.key)
