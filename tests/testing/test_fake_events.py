"""Write listeners: every successful write (API or server-side) is reported as a WriteEvent."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_exactonline.testing import FakeExactOnline, WriteEvent
from tests.testing.conftest import api_session


def test_every_api_write_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    events: list[WriteEvent] = []

    def broken(event: WriteEvent) -> None:
        raise RuntimeError("listener bug")

    with FakeExactOnline(minutely_limit=None) as fake:
        fake.add_write_listener(events.append)
        fake.add_write_listener(broken)
        api = api_session(fake.issue_tokens()["access_token"])
        created = api.post(fake.api_url("crm/Accounts"), json={"Name": "Listener B.V."}, timeout=10)
        assert created.status_code == 201  # the broken listener does not break the write
        key = created.json()["d"]["ID"]
        assert api.put(fake.api_url(f"crm/Accounts(guid'{key}')"), json={"Name": "Renamed"}, timeout=10).ok
        assert api.delete(fake.api_url(f"crm/Accounts(guid'{key}')"), timeout=10).status_code == 204
        assert api.post(fake.api_url("bulk/CRM/Accounts"), json={"Name": "x"}, timeout=10).status_code == 405
        fake.remove_write_listener(broken)
        fake.create_record("logistics/Items", data={"Code": "X1", "Description": "X"})
        fake.remove_write_listener(events.append)
        fake.create_record("logistics/Items", data={"Code": "X2", "Description": "Y"})
    assert [(e.entity, e.action, e.division) for e in events] == [
        ("crm/Accounts", "Create", 1001),
        ("crm/Accounts", "Update", 1001),
        ("crm/Accounts", "Delete", 1001),
        ("logistics/Items", "Create", 1001),
    ]
    assert {e.key for e in events[:3]} == {key.lower()}
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    # Other tests may leave the root logger at DEBUG (urllib3 records): look at the fake's own error records.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("airflow_provider")]
    assert errors and any("listener bug" in f"{r.getMessage()} {r.exc_info!r}" for r in errors)
