"""Single-record calls over real HTTP to the fake: a POST that may have reached Exact is never repeated."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException
from hook_support import FAKE_DIVISION, fake_hook

from airflow_provider_exactonline.exceptions import (
    ExactOnlineCatalogError,
    ExactOnlineOutcomeUnknown,
    ExactOnlineServerError,
    ExactOnlineUnknownField,
)

pytestmark = pytest.mark.usefixtures("env_conns")


def test_create_whose_answer_was_lost_raises_outcome_unknown_which_airflow_does_not_retry():
    with fake_hook(rows={"crm/Accounts": 1}) as (fake, hook, _):
        fake.drop_next(1, path_contains="crm/Accounts", when="mid_response")  # Exact creates it, the answer is lost
        with pytest.raises(ExactOnlineOutcomeUnknown, match="may have reached") as caught:
            hook.create("Accounts", {"Name": "Once only BV", "Code": "ONCE"})
        assert isinstance(caught.value, AirflowFailException)  # a task retry would POST again
        assert fake.count_requests("crm/Accounts", method="POST") == 1
        names = [r.get("Name") for r in fake.records("crm/Accounts", FAKE_DIVISION)]
        assert names.count("Once only BV") == 1


def test_create_answered_5xx_raises_outcome_unknown_but_a_put_stays_retryable():
    with fake_hook(rows={"crm/Accounts": 1}, hook_kwargs={"max_retries": 0}) as (fake, hook, _):
        fake.fail_next(1, status=503, path_contains="crm/Accounts")
        with pytest.raises(ExactOnlineOutcomeUnknown, match="HTTP 503") as caught:
            hook.create("Accounts", {"Name": "Maybe BV", "Code": "MAYBE"})
        assert isinstance(caught.value, AirflowFailException) and caught.value.status_code == 503
        assert fake.count_requests("crm/Accounts", method="POST") == 1

        record = next(hook.iter_records("Accounts", select="ID", filter="Blocked eq false"))
        fake.fail_next(1, status=503, path_contains="crm/Accounts")
        with pytest.raises(ExactOnlineServerError) as put_failed:
            hook.update("Accounts", record["ID"], {"Name": "Renamed"})
        assert not isinstance(put_failed.value, (AirflowFailException, ExactOnlineOutcomeUnknown))


def test_payloads_are_checked_against_the_catalog_before_post_and_put():
    with fake_hook(rows={"crm/Accounts": 1}) as (fake, hook, _):
        with pytest.raises(ExactOnlineUnknownField, match="Nmae"):
            hook.create("Accounts", {"Nmae": "Typo BV", "Code": "TYPO"})
        with pytest.raises(ExactOnlineUnknownField, match="Nmae"):
            hook.update("Accounts", "00000000-0000-4000-8000-000000000000", {"Nmae": "Typo BV"})
        with pytest.raises(ExactOnlineCatalogError, match="read-only"):
            hook.create("system/Divisions", {"Code": 1})
        assert fake.requests == []
