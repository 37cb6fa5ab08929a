"""Collection reads over real HTTP to the fake: mandatory filtering checked first, a path's division honoured."""

from __future__ import annotations

import pytest
from hook_support import FAKE_DIVISION, fake_hook

from airflow_provider_exactonline.exceptions import (
    ExactOnlineCatalogError,
    ExactOnlineConfigError,
    ExactOnlineMandatoryFilterError,
)

pytestmark = pytest.mark.usefixtures("env_conns")

OTHER_DIVISION = 1002
EVERY_ACCOUNT = "Blocked eq false"


@pytest.mark.parametrize(
    "entity",
    ["crm/Accounts", "Accounts", "bulk/CRM/Accounts", "/crm/Accounts", "/api/v1/1001/bulk/CRM/Accounts"],
)
def test_an_unfiltered_read_that_mandatory_filtering_refuses_fails_before_any_request(entity):
    with fake_hook(rows={"crm/Accounts": 3}) as (fake, hook, _):
        with pytest.raises(ExactOnlineMandatoryFilterError) as caught:
            hook.iter_pages(entity, select="ID")
        message = str(caught.value)
        assert "sync/CRM/Accounts" in message and "AccountManager" in message and "$filter" in message
        assert isinstance(caught.value, ExactOnlineCatalogError)
        with pytest.raises(ExactOnlineMandatoryFilterError):
            hook.iter_records(entity, select="ID")
        with pytest.raises(ExactOnlineMandatoryFilterError):
            hook.count(entity)
        if "/" in entity:  # a raw GET on the same collection is checked as well
            with pytest.raises(ExactOnlineMandatoryFilterError):
                hook.get(entity.lstrip("/"), params={"$select": "ID"})
        assert fake.requests == []  # refused before the call: no error counted by Exact


def test_a_filter_on_an_allowed_field_and_the_sync_endpoint_read_normally():
    with fake_hook(rows={"crm/Accounts": 3, "sync/CRM/Accounts": 3}) as (fake, hook, _):
        assert len(list(hook.iter_records("crm/Accounts", select="ID", filter=EVERY_ACCOUNT))) == 3
        assert hook.count("crm/Accounts", filter=EVERY_ACCOUNT) == 3
        assert len(list(hook.iter_records("sync/CRM/Accounts", select="ID,Timestamp"))) == 3
        assert fake.count_requests() == 3


@pytest.mark.parametrize("form", ["path", "url"])
def test_a_raw_path_with_its_own_division_is_read_from_that_division(form):
    with fake_hook(rows={"crm/Accounts": 2}) as (fake, hook, _):
        assert hook.division == FAKE_DIVISION
        path = f"/api/v1/{OTHER_DIVISION}/crm/Accounts"
        entity = path if form == "path" else f"{fake.base_url}{path}"
        list(hook.iter_records(entity, select="ID", filter=EVERY_ACCOUNT))
        assert fake.requests[-1].division == OTHER_DIVISION
        list(hook.iter_pages(entity, select="ID", filter=EVERY_ACCOUNT, division=OTHER_DIVISION))  # agrees: fine
        assert fake.requests[-1].division == OTHER_DIVISION
        hook.count(entity, filter=EVERY_ACCOUNT)
        assert fake.requests[-1].division == OTHER_DIVISION
        assert {r.division for r in fake.requests} == {OTHER_DIVISION}  # never the hook's default division


def test_a_division_argument_that_contradicts_the_path_is_refused_before_any_request():
    with fake_hook(rows={"crm/Accounts": 2}) as (fake, hook, _):
        path = f"/api/v1/{OTHER_DIVISION}/crm/Accounts"
        for call in (
            lambda: hook.iter_records(path, filter=EVERY_ACCOUNT, division=FAKE_DIVISION),
            lambda: hook.count(path, filter=EVERY_ACCOUNT, division=FAKE_DIVISION),
            lambda: hook.get_record(path, "00000000-0000-4000-8000-000000000000", division=FAKE_DIVISION),
        ):
            with pytest.raises(ExactOnlineConfigError, match=f"names division {OTHER_DIVISION}"):
                call()
        with pytest.raises(ExactOnlineConfigError, match="must not leave"):
            hook.iter_records(f"https://evil.example.com{path}", filter=EVERY_ACCOUNT)
        assert fake.requests == []


def test_system_me_is_current_me():
    with fake_hook(division=None) as (fake, hook, _):
        me = list(hook.iter_records("System/Me"))
        assert len(me) == 1 and me[0]["CurrentDivision"] == FAKE_DIVISION
        assert fake.requests[-1].path == "/api/v1/current/Me"
        assert hook.current_user()["CurrentDivision"] == FAKE_DIVISION
