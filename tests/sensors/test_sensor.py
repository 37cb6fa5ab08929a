"""ExactOnlineSensor: pokes against the fake server, the daily limit, and deferral (no tokens serialized)."""

from __future__ import annotations

import datetime as dt

import pytest
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSensorTimeout, TaskDeferred
from airflow_db import ctx

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError, ExactOnlineError, ExactOnlineUnknownField
from airflow_provider_exactonline.sensors.exactonline import ExactOnlineSensor
from airflow_provider_exactonline.triggers.exactonline import ExactOnlineTrigger


def sensor(conn, **kwargs):
    kwargs.setdefault("entity", "crm/Accounts")
    kwargs.setdefault("division", 1001)
    return ExactOnlineSensor(task_id="wait", poke_interval=1, timeout=60, **conn, **kwargs)


def test_poke_query_found_and_not_found(fake, conn):
    code = next(iter(fake.records("crm/Accounts", 1001)))["Code"].strip()
    found = sensor(conn, filter=f"trim(Code) eq '{code}'", select="ID,Code").poke(ctx())
    assert found.is_done and found.xcom_value["Code"].strip() == code
    missing = sensor(conn, filter="trim(Code) eq 'nope'").poke(ctx())
    assert not missing.is_done and missing.xcom_value is None


def test_sync_rows_past_a_watermark(fake, conn):
    top = max(r["Timestamp"] for r in fake.records("crm/Accounts", 1001))
    s = sensor(conn, since_timestamp="{{ params.ts }}")
    context = ctx()
    context["params"] = {"ts": top}
    s.render_template_fields(context)
    assert s.query()[0] == "sync/CRM/Accounts"
    assert not s.poke(context).is_done
    created = fake.create_record("crm/Accounts", 1001, {"Name": "New"})
    hit = s.poke(context)
    assert hit.is_done and hit.xcom_value["Timestamp"] == created["Timestamp"]


def test_bad_field_fails_before_any_call(fake, conn):
    before = len(fake.requests)
    with pytest.raises(ExactOnlineUnknownField):
        sensor(conn, filter="Cod eq 'x'").poke(ctx())
    assert len(fake.requests) == before


@pytest.mark.fake_exact_online(daily_limit=2)
def test_spent_daily_limit_reschedules(fake, conn):
    s = sensor(conn, filter="trim(Code) eq 'nope'", mode="reschedule")
    with pytest.raises(AirflowRescheduleException) as caught:
        for _ in range(4):
            s.poke(ctx())
    assert caught.value.reschedule_date > dt.datetime.now(dt.timezone.utc)


@pytest.mark.fake_exact_online(daily_limit=1)
def test_deferrable_defers_with_only_conn_id_and_query(fake, conn):
    s = sensor(conn, filter="trim(Code) eq 'nope'", deferrable=True)
    with pytest.raises(TaskDeferred) as caught:
        s.execute(ctx())
    trigger = caught.value.trigger
    assert isinstance(trigger, ExactOnlineTrigger) and caught.value.method_name == "execute_complete"
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_exactonline.triggers.exactonline.ExactOnlineTrigger"
    assert kwargs["exactonline_conn_id"] == "exact_ops" and kwargs["params"]["$filter"] == "trim(Code) eq 'nope'"
    assert kwargs["wait_until"] is None
    text = repr(kwargs)
    assert fake.current_access_token not in text and "token" not in text.lower()

    # The first poke spent the daily budget: the next deferral sleeps until Exact's reset.
    with pytest.raises(TaskDeferred) as caught:
        sensor(conn, filter="trim(Code) eq 'nope'", deferrable=True).execute(ctx())
    wait_until = caught.value.trigger.wait_until
    assert wait_until is not None and wait_until > dt.datetime.now().timestamp()


def test_execute_complete(conn):
    s = sensor(conn, deferrable=True)
    assert s.execute_complete(ctx(), {"status": "success", "row": {"ID": "x"}}) == {"ID": "x"}
    with pytest.raises(AirflowSensorTimeout):
        s.execute_complete(ctx(), {"status": "timeout", "message": "late"})
    with pytest.raises(ExactOnlineError, match="HTTP 404"):
        s.execute_complete(ctx(), {"status": "error", "message": "HTTP 404"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"since_timestamp": 5, "filter": "Name eq 'x'"},
        {"since_export_watermark": "nightly.sync", "filter": "Name eq 'x'"},
        {"entity": "sync/CRM/Accounts", "filter": "Name eq 'x'"},
    ],
)
def test_filter_on_a_sync_endpoint_is_refused_before_any_call(fake, conn, kwargs):
    """Exact's sync endpoints filter on Timestamp only: anything else would cost a 400."""
    before = len(fake.requests)
    s = sensor(conn, **kwargs)
    with pytest.raises(
        ExactOnlineConfigError, match=r"Timestamp only.*standard endpoint instead \(entity='crm/Accounts'"
    ):
        s.poke(ctx())
    with pytest.raises(ExactOnlineConfigError, match="Timestamp only"):
        s.execute(ctx())  # the deferrable path checks first too
    assert len(fake.requests) == before


def test_since_export_watermark_reads_that_exports_watermark(fake, conn, monkeypatch):
    from airflow_provider_exactonline.operators.watermark import VariableWatermarkStore, Watermark, watermark_key

    top = max(r["Timestamp"] for r in fake.records("crm/Accounts", 1001))
    wanted = watermark_key("exact_ops", "crm/Accounts", 1001, "nightly.sync")
    read: list[str] = []

    def get(self, key):
        read.append(key)
        return Watermark(timestamp=top) if key == wanted else None

    monkeypatch.setattr(VariableWatermarkStore, "get", get)
    s = sensor(conn, since_export_watermark="{{ params.export }}")
    context = ctx()
    context["params"] = {"export": "nightly.sync"}
    s.render_template_fields(context)
    assert s.query() == ("sync/CRM/Accounts", {"$select": "Timestamp,ID", "$filter": f"Timestamp gt {top}L"})
    assert read == [wanted]
    with pytest.raises(ExactOnlineConfigError, match=r"watermark id, not True"):
        sensor(conn, since_export_watermark=True).query()
