"""The three example DAGs, end to end with dag.test() against the fake server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import airflow_db
import pytest
from conftest import load_dag, load_module


def _states(dagrun):
    return {(ti.task_id, ti.map_index): ti.state for ti in dagrun.get_task_instances()}


def _manifests(base: Path, entity: str, division: int) -> list[dict]:
    root = base / entity / f"division={division}"
    return sorted((json.loads(p.read_text()) for p in root.glob("*/_manifest.json")), key=lambda m: m["finished_at"])


def test_incremental_sync_full_then_incremental(fake, tmp_path, monkeypatch):
    import datetime as dt

    monkeypatch.setenv("AIRFLOW_VAR_EXACTONLINE_EXPORT_PATH", f"file://{tmp_path}")
    example = load_module("exactonline_incremental_sync")
    assert {e.split("/")[1] for e in example.ENTITIES} == {
        "Accounts",
        "Contacts",
        "SalesInvoices",
        "TransactionLines",
        "GLAccounts",
    }
    first = example.dag.test(logical_date=dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc))
    assert first.state == "success", _states(first)
    assert len([k for k in _states(first) if k[0] == "sync"]) == 10  # 5 entities x 2 divisions
    for entity in example.ENTITIES:
        for division in (1001, 1002):
            (manifest,) = _manifests(tmp_path, entity, division)
            assert manifest["rows"] == fake.record_count(entity, division)
            assert manifest["watermark"]["full_load"] is True
            key = manifest["watermark"]["variable"]
            wm_id, conn_id = "exactonline_incremental_sync.sync", "exactonline_default"  # this DAG and task's own
            assert key == f"exactonline_watermark__{wm_id}__{conn_id}__{entity.replace('/', '_')}__{division}"
            stored = json.loads(airflow_db.get_variable(key))
            assert stored["timestamp"] == manifest["watermark"]["to"]

    victim = next(iter(fake.records("crm/Accounts", 1001)))["ID"]
    fake.delete_record("crm/Accounts", 1001, victim)
    fake.create_record("crm/Contacts", 1002, {"Account": victim, "FirstName": "Nieuw", "LastName": "Contact"})
    second = example.dag.test(logical_date=dt.datetime(2024, 5, 1, 11, tzinfo=dt.timezone.utc))
    assert second.state == "success", _states(second)
    accounts = _manifests(tmp_path, "crm/Accounts", 1001)[-1]
    assert accounts["rows"] == 0 and accounts["deletes"] == 1 and accounts["watermark"]["full_load"] is False
    contacts = _manifests(tmp_path, "crm/Contacts", 1002)[-1]
    assert contacts["rows"] == 1 and contacts["deletes"] == 0
    assert _manifests(tmp_path, "financial/GLAccounts", 1001)[-1]["rows"] == 0


def test_upsert_accounts(fake):
    import datetime as dt

    dag = load_dag("exactonline_upsert_accounts")
    run = dag.test(logical_date=dt.datetime(2024, 5, 2, tzinfo=dt.timezone.utc))
    assert run.state == "success", _states(run)
    codes = [str(r.get("Code") or "").strip() for r in fake.records("crm/Accounts", 1001)]
    assert all(codes.count(c) == 1 for c in ("CRM0001", "CRM0002", "CRM0003"))
    posts = fake.count_requests("crm/Accounts", method="POST")
    run = dag.test(logical_date=dt.datetime(2024, 5, 3, tzinfo=dt.timezone.utc))
    assert run.state == "success"
    assert fake.count_requests("crm/Accounts", method="POST") == posts  # the rerun created nothing


def _invoice_later(fake, number: int, delay: float) -> threading.Thread:
    def work() -> None:
        time.sleep(delay)
        fake.create_record(
            "salesinvoice/SalesInvoices",
            1001,
            {
                "InvoiceNumber": number,
                "Status": 50,
                "OrderedBy": fake.key_of("crm/Accounts", 0, 1001),
                "InvoiceToName": "Late Payer BV",
                "AmountDC": 121.0,
            },
        )

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("how", ["deferrable", "reschedule"])
def test_wait_for_paid_invoice(fake, how):
    import datetime as dt

    dag = load_dag("exactonline_wait_for_paid_invoice")
    sensor = dag.get_task("wait_for_paid_invoice")
    sensor.poke_interval = 1
    if how == "reschedule":
        sensor.deferrable = False
        assert sensor.mode == "reschedule"
    thread = _invoice_later(fake, 99000001, delay=2.5)
    started = time.monotonic()
    run = dag.test(
        logical_date=dt.datetime(2024, 5, 4, 1 if how == "deferrable" else 2, tzinfo=dt.timezone.utc),
        run_conf={"invoice_number": 99000001},
    )
    thread.join()
    assert run.state == "success", _states(run)
    assert time.monotonic() - started >= 2.5  # it really waited
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    if how == "reschedule":
        assert tis["wait_for_paid_invoice"].try_number == 1  # rescheduled pokes are not retries
    polls = fake.count_requests("salesinvoice/SalesInvoices", method="GET")
    assert polls >= 2
    message = tis["invoice_paid"].xcom_pull(task_ids="invoice_paid")
    assert message is None or "99000001" in str(message)
