"""Webhook subscriptions against the fake Exact Online over loopback HTTP."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.testing import FakeExactOnline
from airflow_provider_exactonline.webhooks.subscriptions import (
    ENTITY,
    list_subscriptions,
    subscribe,
    unsubscribe,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hooks"))
from hook_support import FAKE_DIVISION, fake_hook  # tests/ is not a package

URL = "https://airflow.example.com/exactonline/webhooks"


def posts(fake: FakeExactOnline) -> int:
    return fake.count_requests(ENTITY, method="POST")


def test_subscribe_is_idempotent_and_unsubscribe_removes_it() -> None:
    with fake_hook() as (fake, hook, _store):
        before = {row["ID"] for row in list_subscriptions(hook, division=FAKE_DIVISION)}
        first = subscribe(hook, "Accounts", URL, division=FAKE_DIVISION, description="mirror")
        again = subscribe(hook, "Accounts", URL, division=FAKE_DIVISION)
        other_topic = subscribe(hook, "Items", URL, division=FAKE_DIVISION)
        assert again["ID"] == first["ID"]
        assert other_topic["ID"] != first["ID"]
        assert (first["Topic"], first["CallbackURL"], first["Description"]) == ("Accounts", URL, "mirror")
        assert posts(fake) == 2  # the repeated subscribe created nothing
        listed = {row["ID"]: row for row in list_subscriptions(hook, division=FAKE_DIVISION)}
        assert set(listed) - before == {first["ID"], other_topic["ID"]}
        stored = fake.get_record(ENTITY, first["ID"], FAKE_DIVISION)
        assert stored is not None and stored["Topic"] == "Accounts"

        unsubscribe(hook, first["ID"], division=FAKE_DIVISION)
        assert fake.get_record(ENTITY, first["ID"], FAKE_DIVISION) is None
        remaining = {row["ID"] for row in list_subscriptions(hook, division=FAKE_DIVISION)}
        assert first["ID"] not in remaining and other_topic["ID"] in remaining
        recreated = subscribe(hook, "Accounts", URL, division=FAKE_DIVISION)
        assert recreated["ID"] != first["ID"]


def test_an_existing_subscription_is_found_by_an_exact_match() -> None:
    with fake_hook() as (fake, hook, _store):
        existing = fake.create_record(ENTITY, FAKE_DIVISION, {"CallbackURL": URL, "Topic": "SalesInvoices"})
        fake.create_record(ENTITY, FAKE_DIVISION, {"CallbackURL": URL + "/other", "Topic": "SalesInvoices"})
        found = subscribe(hook, "SalesInvoices", URL, division=FAKE_DIVISION)
        assert found["ID"] == existing["ID"]
        assert posts(fake) == 0


@pytest.mark.parametrize(
    ("topic", "url", "match"),
    [
        ("Accounts", "http://airflow.example.com/hook", "HTTPS"),
        ("Accounts", "ftp://127.0.0.1/x", "HTTPS"),
        ("Accounts", "", "HTTPS"),
        ("crm/Accounts", URL, "topic"),
        ("", URL, "topic"),
    ],
)
def test_arguments_exact_would_refuse_are_refused_before_any_call(topic: str, url: str, match: str) -> None:
    with fake_hook() as (fake, hook, _store):
        calls = len(fake.requests)
        with pytest.raises(ExactOnlineConfigError, match=match):
            subscribe(hook, topic, url, division=FAKE_DIVISION)
        with pytest.raises(ExactOnlineConfigError, match="GUID"):
            unsubscribe(hook, "not-a-guid", division=FAKE_DIVISION)
        assert len(fake.requests) == calls


def test_loopback_http_callbacks_are_allowed_for_the_fake() -> None:
    with fake_hook() as (_fake, hook, _store):
        row = subscribe(hook, "Accounts", "http://127.0.0.1:8999/cb", division=FAKE_DIVISION)
        assert row["CallbackURL"] == "http://127.0.0.1:8999/cb"
