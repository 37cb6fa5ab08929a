"""ExactOnlineTrigger's async loop against the fake server (tokens through the real token stores)."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import airflow_db
import pytest

from airflow_provider_exactonline.triggers.exactonline import ExactOnlineTrigger


@pytest.fixture
def db_conn(fake):
    """The trigger builds its own hook (only the conn id is serialized), so tokens live in the real stores."""
    airflow_db.migrate()
    airflow_db.forget_exactonline_variables()
    key = airflow_db.connect(fake, "exact_trigger")
    yield "exact_trigger"
    os.environ.pop(key, None)


def first_event(trigger):
    async def run():
        return await anext(trigger.run())

    return asyncio.run(asyncio.wait_for(run(), timeout=60)).payload


def trigger(conn_id, flt, **kwargs):
    kwargs.setdefault("poke_interval", 0.2)
    return ExactOnlineTrigger(
        conn_id, path="crm/Accounts", division=1001, params={"$filter": flt, "$top": 1, "$select": "ID,Code"}, **kwargs
    )


def test_serialize_round_trip():
    t = ExactOnlineTrigger("c", path="crm/Accounts", division=1, params={"$top": 1}, poke_interval=5, end_time=9.0)
    classpath, kwargs = t.serialize()
    assert ExactOnlineTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_fires_when_the_row_appears_and_survives_a_503(fake, db_conn):
    fake.fail_next(1, status=503)

    def later() -> None:
        # Only after the 503 and one empty answer, so the trigger must have survived the 503 and polled again.
        deadline = time.monotonic() + 60
        while fake.count_requests("crm/Accounts", method="GET") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        fake.create_record("crm/Accounts", 1001, {"Name": "Arrives later", "Code": "LATE1"})

    threading.Thread(target=later, daemon=True).start()
    event = first_event(trigger(db_conn, "trim(Code) eq 'LATE1'"))
    assert event["status"] == "success" and event["row"]["Code"].strip() == "LATE1"
    assert fake.count_requests("crm/Accounts", method="GET") >= 3


def test_timeout_and_error_events(fake, db_conn):
    event = first_event(trigger(db_conn, "trim(Code) eq 'never'", end_time=time.time() + 0.8))
    assert event["status"] == "timeout"
    bad = ExactOnlineTrigger(db_conn, path="crm/NoSuchThing", division=1001, params={"$top": 1}, poke_interval=0.1)
    event = first_event(bad)
    assert event["status"] == "error" and "404" in event["message"]
    assert fake.count_requests("crm/NoSuchThing") == 1  # a 4xx is never retried


@pytest.mark.fake_exact_online(access_token_lifetime=2.0)
def test_refreshes_an_expired_token_through_the_stores(fake, db_conn):
    time.sleep(2.2)  # the seeded access token is now expired
    first = fake.current_access_token
    code = next(iter(fake.records("crm/Accounts", 1001)))["Code"].strip()
    event = first_event(trigger(db_conn, f"trim(Code) eq '{code}'"))
    assert event["status"] == "success"
    assert fake.current_access_token != first
    from airflow_provider_exactonline.auth.token_stores import VariableTokenStore

    raw = airflow_db.get_variable("exactonline_token__exact_trigger")
    assert raw is not None and fake.current_refresh_token not in raw  # encrypted at rest
    stored = VariableTokenStore("exact_trigger").load()
    assert stored is not None and stored.refresh_token == fake.current_refresh_token  # persisted, not in memory
