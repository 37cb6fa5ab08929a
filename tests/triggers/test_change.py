"""ExactOnlineChangeTrigger against the fake over loopback HTTP (tokens through the real token stores).

The real triggerer (AssetWatcher -> Asset event -> DAG run) is tests/integration/test_webhooks_e2e.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import airflow_db
import pytest

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.operators.watermark import Watermark, watermark_key
from airflow_provider_exactonline.triggers.change import ExactOnlineChangeTrigger

SYNC = "sync/CRM/Contacts"


@pytest.fixture
def db_conn(fake: Any) -> Any:
    airflow_db.migrate()
    airflow_db.forget_exactonline_variables()
    key = airflow_db.connect(fake, "exact_change")
    yield "exact_change"
    os.environ.pop(key, None)


def newest(fake: Any, entity: str = "crm/Contacts", division: int = 1001) -> int:
    return max(int(r["Timestamp"]) for r in fake.records(entity, division))


def polls(fake: Any) -> int:
    return fake.count_requests(SYNC, method="GET")


async def collect(trigger: ExactOnlineChangeTrigger, seconds: float, actions: dict[float, Any]) -> list[dict]:
    """Run the trigger for ``seconds``; ``actions[t]()`` runs t seconds in (in a thread: they use the fake)."""
    events: list[dict] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event.payload)

    task = asyncio.create_task(consume())
    started = time.monotonic()
    for at, action in sorted(actions.items()):
        await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
        await asyncio.to_thread(action)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return events


def test_serialize_round_trip_and_sync_path() -> None:
    t = ExactOnlineChangeTrigger("c", entity="crm/Accounts", division=7, interval=30, max_calls_per_hour=20)
    classpath, kwargs = t.serialize()
    assert ExactOnlineChangeTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert classpath == "airflow_provider_exactonline.triggers.change.ExactOnlineChangeTrigger"
    assert t.sync_path.lower() == "sync/crm/accounts"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"interval": 0.1}, "interval"),
        ({"max_calls_per_hour": 0}, "max_calls_per_hour"),
        ({"budget_share": 2}, "budget_share"),
        ({"entity": "crm/NoSuchThing"}, "catalog"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ExactOnlineConfigError, match=needle):
        ExactOnlineChangeTrigger("c", **{"entity": "crm/Contacts", "division": 1, **kwargs})


def test_the_budget_caps_calls_in_every_sliding_hour() -> None:
    t = ExactOnlineChangeTrigger("c", entity="crm/Contacts", division=1, interval=1, max_calls_per_hour=12)
    calls = []
    now = 0.0
    while now < 4 * 3600:
        if t.seconds_until_allowed(now) == 0:
            t.note_call(now)
            calls.append(now)
        now += 1
    worst_hour = max(sum(1 for c in calls if start <= c < start + 3600) for start in calls)
    assert worst_hour <= 12
    assert len(calls) >= 4 * 12 - 1  # and it does use its budget


def test_the_default_budget_is_a_share_of_the_daily_limit() -> None:
    t = ExactOnlineChangeTrigger("c", entity="crm/Contacts", division=1, interval=1, budget_share=0.024)
    assert t.calls_per_hour == pytest.approx(0.024 * 5000 / 24)  # 5 calls an hour of Exact's 5000 a day


def test_fires_once_per_change_and_never_without_one(fake: Any, db_conn: str) -> None:
    since = newest(fake)
    trigger = ExactOnlineChangeTrigger(
        db_conn, entity="crm/Contacts", division=1001, interval=1, since=since, max_calls_per_hour=3600
    )
    events: list[dict] = []

    async def until(what: str, predicate: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; events={events}"
            await asyncio.sleep(0.05)

    async def quiet_for(n: int) -> None:
        """``n`` more polls and no new event."""
        seen, fired = polls(fake), len(events)
        await until(f"{n} polls", lambda: polls(fake) >= seen + n)
        assert len(events) == fired, events

    async def scenario() -> None:
        async def consume() -> None:
            async for event in trigger.run():
                events.append(event.payload)

        task = asyncio.create_task(consume())
        await until("the first poll", lambda: polls(fake) >= 1)
        await quiet_for(2)  # nothing changed: nothing fires
        created = await asyncio.to_thread(
            fake.create_record, "crm/Contacts", 1001, {"FirstName": "Change", "LastName": "Trigger"}
        )
        await until("the create's event", lambda: len(events) == 1)
        await quiet_for(2)  # fired once, not again
        await asyncio.to_thread(fake.create_record, "crm/Contacts", 1002, {"FirstName": "Other", "LastName": "Div"})
        await quiet_for(2)  # another division is not this trigger's
        await asyncio.to_thread(fake.update_record, "crm/Contacts", 1001, created["ID"], {"LastName": "Trigger II"})
        await until("the update's event", lambda: len(events) == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert [e["since"] for e in events] == [since, events[0]["timestamp"]]
    assert since < events[0]["timestamp"] < events[1]["timestamp"]
    assert {e["division"] for e in events} == {1001} and {e["topic"] for e in events} == {"Contacts"}
    calls = [r for r in fake.requests if SYNC.lower() in r.path.lower()]
    assert all("Timestamp" in r.query and r.status == 200 for r in calls)
    gaps = [b.time - a.time for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 0.95  # never faster than interval=1


def test_it_follows_the_mirrors_watermark(fake: Any, db_conn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changes the mirror already loaded do not fire; the trigger starts where the mirror is."""
    old = fake.create_record("crm/Contacts", 1001, {"FirstName": "Already", "LastName": "Mirrored"})
    key = watermark_key(db_conn, "crm/Contacts", 1001, "mirror_dag_mirror")
    monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", Watermark(timestamp=int(old["Timestamp"])).to_json())
    trigger = ExactOnlineChangeTrigger(
        db_conn,
        entity="crm/Contacts",
        division=1001,
        interval=1,
        watermark_id="mirror_dag_mirror",
        max_calls_per_hour=3600,
    )

    def create() -> None:
        fake.create_record("crm/Contacts", 1001, {"FirstName": "New", "LastName": "Change"})

    events = asyncio.run(collect(trigger, 4.5, {2.2: create}))
    assert len(events) == 1 and events[0]["since"] == int(old["Timestamp"])


def test_the_cap_holds_at_the_fake(fake: Any, db_conn: str) -> None:
    """interval=1 but at most 1800 calls an hour: one call every 2 s, counted by the fake."""
    trigger = ExactOnlineChangeTrigger(
        db_conn, entity="crm/Contacts", division=1001, interval=1, max_calls_per_hour=1800, since=newest(fake)
    )
    asyncio.run(collect(trigger, 7.0, {}))
    assert 3 <= polls(fake) <= 4  # not 7


def test_a_4xx_pauses_instead_of_burning_the_error_budget(fake: Any, db_conn: str) -> None:
    fake.fail_next(1, status=400, path_contains="sync/")
    trigger = ExactOnlineChangeTrigger(
        db_conn, entity="crm/Contacts", division=1001, interval=1, since=0, max_calls_per_hour=3600
    )
    events = asyncio.run(collect(trigger, 3.0, {}))
    assert events == [] and polls(fake) == 1


def test_a_missing_connection_does_not_end_the_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow_provider_exactonline.triggers.change as change

    monkeypatch.setattr(change, "ERROR_PAUSE", 0.2)
    attempts = []
    real = ExactOnlineChangeTrigger._token_manager_and_url

    def counted(self: ExactOnlineChangeTrigger) -> Any:
        attempts.append(time.monotonic())
        return real(self)

    monkeypatch.setattr(ExactOnlineChangeTrigger, "_token_manager_and_url", counted)
    trigger = ExactOnlineChangeTrigger("exact_no_such_conn", entity="crm/Contacts", division=1001, interval=1)
    assert asyncio.run(collect(trigger, 4.0, {})) == []  # still running when cancelled: it did not raise
    assert len(attempts) >= 2  # and it keeps retrying
