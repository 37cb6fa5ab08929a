"""Exact's rules in the fake: mandatory filtering, sync/Deleted EntityType per entity, SyncTimestamp."""

from __future__ import annotations

import pytest

from airflow_provider_exactonline.clock import ScaledClock
from airflow_provider_exactonline.testing import FakeExactOnline
from airflow_provider_exactonline.testing.entities import catalog_entities, spec_of
from tests.testing.conftest import api_session

PREFIX = "This endpoint has mandatory filtering applied. A GET request for this endpoint must have a $filter"


@pytest.mark.parametrize("path", ["crm/Accounts", "bulk/CRM/Accounts?$select=ID"])
def test_an_unfiltered_read_of_an_entity_with_a_sync_twin_is_refused(path: str) -> None:
    with FakeExactOnline(minutely_limit=None) as fake:
        api = api_session(fake.issue_tokens()["access_token"])
        refused = api.get(fake.api_url(path), timeout=10)
        assert refused.status_code == 400
        assert refused.json()["error"]["message"]["value"].startswith(PREFIX)
        sep = "&" if "?" in path else "?"
        key = fake.key_of("crm/Accounts", 0)
        allowed = api.get(fake.api_url(path) + f"{sep}$filter=ID eq guid'{key}'", timeout=10)
        assert allowed.status_code == 200, allowed.text
        assert [r["ID"] for r in allowed.json()["d"]["results"]] == [key]


def test_an_entity_without_a_sync_twin_is_read_unfiltered() -> None:
    with FakeExactOnline(minutely_limit=None) as fake:
        api = api_session(fake.issue_tokens()["access_token"])
        assert api.get(fake.api_url("salesinvoice/SalesInvoiceLines"), timeout=10).status_code == 200


def test_mandatory_filtering_can_be_switched_off() -> None:
    with FakeExactOnline(minutely_limit=None, mandatory_filtering=False) as fake:
        api = api_session(fake.issue_tokens()["access_token"])
        response = api.get(fake.api_url("crm/Accounts"), timeout=10)
        assert response.status_code == 200 and len(response.json()["d"]["results"]) == 60


def test_a_mandatory_filter_refusal_counts_against_the_error_budget() -> None:
    with FakeExactOnline(minutely_limit=None, error_budget=2) as fake:
        api = api_session(fake.issue_tokens()["access_token"])
        assert [api.get(fake.api_url("crm/Accounts"), timeout=10).status_code for _ in range(3)] == [400, 400, 403]


DELETABLE = [e for e in catalog_entities() if e.deleted_type is not None and e.path and "DELETE" in e.methods]


def test_sync_deleted_lists_each_entitys_own_entity_type() -> None:
    assert len(DELETABLE) >= 10
    with FakeExactOnline(minutely_limit=None, daily_limit=None) as fake:
        api = api_session(fake.issue_tokens()["access_token"])
        for entity in DELETABLE:
            key = next(fake.records(entity.label))[entity.key]
            literal = str(key) if entity.int_key else f"guid'{key}'"
            assert api.delete(fake.api_url(f"{entity.path}({literal})"), timeout=10).status_code == 204
        url = fake.api_url("sync/Deleted") + "?$select=EntityKey,EntityType&$filter=Timestamp gt 1L"
        results = api.get(url, timeout=10).json()["d"]["results"]
    spec_codes = [spec_of(e).deleted_entity_type for e in DELETABLE]  # type: ignore[union-attr]
    assert [r["EntityType"] for r in results] == spec_codes


def test_sync_timestamp_turns_a_date_into_a_watermark() -> None:
    clock = ScaledClock(1.0)
    with FakeExactOnline(clock=clock, rows={"crm/Accounts": 2000}, minutely_limit=None) as fake:
        api = api_session(fake.issue_tokens()["access_token"])
        rows = list(fake.records("crm/Accounts"))
        iso = "2021-01-25T09:00:00"  # 21 days after the first generated row
        url = fake.api_url("read/sync/Sync/SyncTimestamp") + f"?modified=datetime'{iso}'&endPoint='CRM/Accounts'"
        response = api.get(url, timeout=10)
        assert response.status_code == 200, response.text
        (found,) = response.json()["d"]["results"]
        assert set(found) == {"Modified", "API", "TimeStampAsBigInt"}
        watermark = found["TimeStampAsBigInt"]
        since = [r for r in rows if int(r["Modified"][6:-2]) >= 1_611_565_200_000]  # 2021-01-25 09:00
        assert since and all(r["Timestamp"] > watermark for r in since)
        assert watermark > min(r["Timestamp"] for r in rows)  # it skips rows older than the date
        bad = api.get(fake.api_url("read/sync/Sync/SyncTimestamp"), timeout=10)
        assert bad.status_code == 400 and "endPoint" in bad.text


def test_a_filter_on_a_field_outside_the_catalogs_list_is_refused_naming_the_allowed_ones() -> None:
    spec = spec_of(next(e for e in catalog_entities() if e.label == "crm/Accounts"))
    allowed = spec.mandatory_filter_fields("standard")  # type: ignore[union-attr]
    assert allowed and "Website" not in allowed and "Name" in allowed
    with FakeExactOnline(minutely_limit=None) as fake:
        api = api_session(fake.issue_tokens()["access_token"])
        refused = api.get(fake.api_url("crm/Accounts"), params={"$filter": "Website eq 'x'"}, timeout=10)
        assert refused.status_code == 400
        message = refused.json()["error"]["message"]["value"]
        assert message == PREFIX + " parameter with one of the following fields in the url: " + ", ".join(allowed)
        ok = api.get(fake.api_url("crm/Accounts"), params={"$filter": "Name ne 'x'", "$select": "ID"}, timeout=10)
        assert ok.status_code == 200 and len(ok.json()["d"]["results"]) == 60
