"""ExactOnlineToObjectStorageOperator against the fake server over loopback (no Airflow DB: tokens and
watermarks in memory)."""

from __future__ import annotations

import json
import math

import pytest
from airflow_db import ctx

from airflow_provider_exactonline.catalog import resolve_entity
from airflow_provider_exactonline.exceptions import ExactOnlineCatalogError, ExactOnlineConfigError
from airflow_provider_exactonline.operators.exactonline import ExactOnlineToObjectStorageOperator
from airflow_provider_exactonline.operators.export import choose_variant, iter_output_records
from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore, watermark_key


def export(conn, tmp_path, store=None, **kwargs):
    store = store if store is not None else MemoryWatermarkStore()  # no Variables outside a task process
    kwargs.setdefault("entity", "crm/Accounts")
    kwargs.setdefault("divisions", 1001)
    return ExactOnlineToObjectStorageOperator(
        task_id="export", path=str(tmp_path), watermark_store=store, **conn, **kwargs
    )


def run_dir(tmp_path, summary, index=0):
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(summary["divisions"][index]["path"])


def ids(path, kind="part"):
    return [r.get("ID") or r.get("EntityKey") for r in iter_output_records(path, kind)]


@pytest.mark.fake_exact_online(rows={"crm/Accounts": 2500}, mandatory_filtering=True)
def test_full_mode_reads_sync_from_the_start_and_hands_its_watermark_to_the_next_run(fake, conn, tmp_path):
    store = MemoryWatermarkStore()
    before = len(fake.requests)
    summary = export(conn, tmp_path, store, rows_per_part=1000).execute(ctx("manual__full"))
    assert summary["rows"] == 2500 and summary["mode"] == "full"
    assert summary["divisions"][0]["endpoint"] == "sync/CRM/Accounts"
    api = [r for r in fake.requests[before:] if "/api/v1/" in r.path]
    assert len(api) == math.ceil(2500 / 1000) and all("/sync/CRM/Accounts" in r.path for r in api)
    assert all(r.status == 200 for r in api)  # mandatory filtering is on: no bulk/standard read was made
    final = tmp_path / "crm" / "Accounts" / "division=1001" / "manual__full__adhoc_airflow.export"
    assert sorted(p.name for p in final.iterdir()) == [
        "_manifest.json",
        "part-00000.jsonl",
        "part-00001.jsonl",
        "part-00002.jsonl",
    ]
    manifest = json.loads((final / "_manifest.json").read_text())
    assert manifest["rows"] == 2500 and [p["rows"] for p in manifest["parts"]] == [1000, 1000, 500]
    assert "Code" in manifest["fields"]
    source = list(fake.records("crm/Accounts", 1001))
    assert sorted(ids(run_dir(tmp_path, summary))) == sorted(r["ID"] for r in source)
    watermark = store.get(watermark_key(conn["exactonline_conn_id"], "crm/Accounts", 1001, "adhoc_airflow.export"))
    assert watermark is not None and watermark.timestamp == manifest["watermark"]["to"]
    assert watermark.timestamp == max(int(r["Timestamp"]) for r in source)
    assert not list((tmp_path / "crm" / "Accounts" / "division=1001" / "_tmp").iterdir())

    # The next incremental run reads only what changed after the full load.
    changed = fake.update_record("crm/Accounts", 1001, source[7]["ID"], {"Name": "Changed after the full load"})
    later = export(conn, tmp_path, store, mode="incremental").execute(ctx("scheduled__next"))
    assert later["rows"] == 1
    assert ids(run_dir(tmp_path, later)) == [changed["ID"]]


def test_full_mode_with_a_filter_reads_bulk_where_mandatory_filtering_is_checked(fake, conn, tmp_path):
    summary = export(conn, tmp_path, filter="Blocked eq false").execute(ctx("manual__filtered"))
    assert summary["divisions"][0]["endpoint"] == "bulk/CRM/Accounts" and summary["rows"] == 150
    with pytest.raises(ExactOnlineCatalogError, match="mandatory filtering"):
        export(conn, tmp_path, filter="Website eq 'x'").execute(ctx("manual__bad"))


def test_mode_picks_sync_bulk_standard_and_refuses_clearly():
    accounts = resolve_entity("Accounts")
    assert choose_variant(accounts, "full", "Accounts") == ("sync", "sync/CRM/Accounts")
    assert choose_variant(accounts, "full", "Accounts", filtered=True) == ("bulk", "bulk/CRM/Accounts")
    assert choose_variant(accounts, "incremental", "Accounts") == ("sync", "sync/CRM/Accounts")
    no_bulk = next(
        s
        for s in __import__("airflow_provider_exactonline.catalog", fromlist=["x"]).all_entities()
        if s.path and not s.bulk_path and not s.sync_path and "GET" in s.methods
    )
    assert choose_variant(no_bulk, "full", no_bulk.name)[0] == "standard"
    with pytest.raises(ExactOnlineCatalogError, match="mode='full'"):
        choose_variant(no_bulk, "incremental", no_bulk.name)
    lines = resolve_entity("SalesInvoiceLines")  # bulk, no sync
    assert choose_variant(lines, "full", "SalesInvoiceLines") == ("bulk", "bulk/SalesInvoice/SalesInvoiceLines")
    with pytest.raises(ExactOnlineCatalogError, match=r"no sync endpoint.*mode='full'"):
        choose_variant(lines, "incremental", "SalesInvoiceLines")


def test_incremental_refusal_happens_before_any_call(fake, conn, tmp_path):
    op = export(conn, tmp_path, MemoryWatermarkStore(), entity="SalesInvoiceLines", mode="incremental")
    before = len(fake.requests)
    with pytest.raises(ExactOnlineCatalogError, match="mode='full'"):
        op.execute(ctx())
    assert len(fake.requests) == before


def test_incremental_full_load_then_changes_and_deletes(fake, conn, tmp_path):
    store = MemoryWatermarkStore()
    first = export(conn, tmp_path, store, mode="incremental").execute(ctx("run1"))
    key = watermark_key("exact_ops", "crm/Accounts", 1001, "adhoc_airflow.export")  # no DAG: adhoc_{owner}
    assert first["rows"] == 150 and first["divisions"][0]["watermark_from"] == 0
    wm1 = store.get(key)
    assert wm1 is not None and wm1.timestamp == first["divisions"][0]["watermark_to"] and wm1.run_id == "run1"

    victims = [r["ID"] for r in fake.records("crm/Accounts", 1001)][:2]
    created = fake.create_record("crm/Accounts", 1001, {"Name": "New BV", "Code": "NEW1"})
    fake.update_record("crm/Accounts", 1001, victims[0], {"Name": "Renamed BV"})
    fake.delete_record("crm/Accounts", 1001, victims[1])

    second = export(conn, tmp_path, store, mode="incremental").execute(ctx("run2"))
    d = second["divisions"][0]
    assert d["watermark_from"] == wm1.timestamp and d["rows"] == 2 and d["deletes"] == 1
    path = run_dir(tmp_path, second)
    rows = list(iter_output_records(path))
    assert {r["ID"] for r in rows} == {created["ID"], victims[0]}
    assert next(r for r in rows if r["ID"] == victims[0])["Name"] == "Renamed BV"
    deleted = list(iter_output_records(path, "deleted"))
    assert [r["EntityKey"] for r in deleted] == [victims[1]] and deleted[0]["EntityType"] == 2
    assert any("/sync/Deleted" in r.path for r in fake.requests)

    # Merge rule from docs/operators.md: apply runs in watermark order, upsert rows, then deletes.
    table: dict[str, dict] = {}
    for summary in (first, second):
        run = run_dir(tmp_path, summary)
        for r in iter_output_records(run):
            table[r["ID"]] = r
        for r in iter_output_records(run, "deleted"):
            if table.get(r["EntityKey"], {}).get("Timestamp", 0) <= r["Timestamp"]:
                table.pop(r["EntityKey"], None)
    assert set(table) == {r["ID"] for r in fake.records("crm/Accounts", 1001)}

    third = export(conn, tmp_path, store, mode="incremental").execute(ctx("run3"))
    assert third["rows"] == 0 and third["deletes"] == 0
    assert store.get(key).timestamp == d["watermark_to"]


def _change_accounts(fake):
    """Create one account and update another; returns their IDs."""
    created = fake.create_record("crm/Accounts", 1001, {"Name": "Nieuw BV", "Code": "NEW1"})
    victim = next(iter(fake.records("crm/Accounts", 1001)))["ID"]
    fake.update_record("crm/Accounts", 1001, victim, {"Name": "Renamed BV"})
    return {created["ID"], victim}


def test_two_exports_of_one_entity_keep_their_own_watermarks(fake, conn, tmp_path):
    """Two DAGs export crm/Accounts of the same division and connection, one to each place: both get every change."""
    from airflow.sdk import DAG

    store = MemoryWatermarkStore()  # as the Variables: one namespace for every DAG
    with DAG("to_s3", schedule=None):
        to_s3 = export(conn, tmp_path / "s3", store, mode="incremental")
    with DAG("to_local", schedule=None):
        to_local = export(conn, tmp_path / "local", store, mode="incremental")
    assert to_s3.execute(ctx("run1"))["rows"] == 150
    assert to_local.execute(ctx("run1"))["rows"] == 150
    assert sorted(store.values) == [
        "exactonline_watermark__to_local.export__exact_ops__crm_Accounts__1001",
        "exactonline_watermark__to_s3.export__exact_ops__crm_Accounts__1001",
    ]

    changed = _change_accounts(fake)
    for op in (to_s3, to_local):  # the second one must not start where the first one committed
        summary = op.execute(ctx("run2"))
        assert {r["ID"] for r in iter_output_records(run_dir(tmp_path, summary))} == changed


def test_watermark_id_shares_one_position_deliberately(fake, conn, tmp_path):
    store = MemoryWatermarkStore()
    first = export(conn, tmp_path / "a", store, mode="incremental", watermark_id="{{ params.wm }}")
    second = ExactOnlineToObjectStorageOperator(
        task_id="other_task",
        entity="crm/Accounts",
        divisions=1001,
        path=str(tmp_path / "b"),
        mode="incremental",
        watermark_store=store,
        watermark_id="accounts-1001",
        **conn,
    )
    context = ctx("run1")
    context["params"] = {"wm": "accounts-1001"}
    first.render_template_fields(context)
    committed = first.execute(context)["divisions"][0]
    assert committed["rows"] == 150
    assert list(store.values) == ["exactonline_watermark__accounts-1001__exact_ops__crm_Accounts__1001"]
    changed = _change_accounts(fake)
    summary = second.execute(ctx("run2"))  # continues from the first task's watermark
    assert summary["divisions"][0]["watermark_from"] == committed["watermark_to"]
    assert {r["ID"] for r in iter_output_records(run_dir(tmp_path, summary))} == changed


def test_retry_of_a_committed_run_keeps_its_output(fake, conn, tmp_path):
    store = MemoryWatermarkStore()
    first = export(conn, tmp_path, store, mode="incremental").execute(ctx("run1", try_number=1))
    again = export(conn, tmp_path, store, mode="incremental").execute(ctx("run1", try_number=2))
    assert again["divisions"][0].get("skipped") is True and again["rows"] == first["rows"] == 150
    assert len(ids(run_dir(tmp_path, again))) == 150


def test_reset_watermark_reloads_everything(fake, conn, tmp_path):
    store = MemoryWatermarkStore()
    export(conn, tmp_path, store, mode="incremental").execute(ctx("run1"))
    op = export(conn, tmp_path, store, mode="incremental", reset_watermark="{{ params.reset }}")
    context = ctx("run2")
    context["params"] = {"reset": True}
    op.render_template_fields(context)
    assert op.reset_watermark == "True"
    assert op.execute(context)["rows"] == 150


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_other_formats(fake, conn, tmp_path, fmt):
    summary = export(conn, tmp_path, format=fmt, entity="Contacts", convert_dates=True).execute(ctx())
    path = run_dir(tmp_path, summary)
    assert (path / f"part-00000.{fmt}").exists()
    assert sorted(ids(path)) == sorted(r["ID"] for r in fake.records("crm/Contacts", 1001))


def test_all_divisions_and_templated_fields(fake, conn, tmp_path):
    op = export(conn, tmp_path, entity="{{ params.entity }}", divisions="{{ params.divisions }}", select="ID,Code,Name")
    context = ctx()
    context["params"] = {"entity": "accounts", "divisions": "all"}
    op.render_template_fields(context)
    assert op.entity == "accounts" and op.divisions == "all"
    summary = op.execute(context)
    assert [d["division"] for d in summary["divisions"]] == [1001, 1002]
    assert summary["rows"] == 300
    first = next(iter_output_records(run_dir(tmp_path, summary, 1)))
    assert set(first) == {"ID", "Code", "Name", "Timestamp"}  # a sync read always carries its Timestamp


def test_filter_with_incremental_is_refused(fake, conn, tmp_path):
    op = export(conn, tmp_path, MemoryWatermarkStore(), mode="incremental", filter="Name eq 'x'")
    with pytest.raises(ExactOnlineConfigError, match="mode='full'"):
        op.execute(ctx())


def test_asset_outlet_and_openlineage(fake, conn, tmp_path):
    op = export(conn, tmp_path)
    assert [a.uri for a in op.outlets] == ["x-exactonline://exact_ops/crm/Accounts"]
    op.execute(ctx())
    lineage = op.get_openlineage_facets_on_complete(None)
    try:
        import airflow.providers.openlineage  # noqa: F401
    except ImportError:
        assert lineage is None  # skipped quietly without the openlineage provider
    else:
        assert lineage.inputs[0].name == "1001/crm/Accounts"
        assert lineage.outputs[0].name.endswith("division=1001/manual__test__adhoc_airflow.export")


def test_two_exports_of_one_entity_with_one_run_id_never_share_a_directory(fake, conn, tmp_path):
    first_store, second_store = MemoryWatermarkStore(), MemoryWatermarkStore()
    one = export(conn, tmp_path, first_store, mode="incremental", watermark_id="dag_a.sync")
    two = export(conn, tmp_path, second_store, mode="incremental", watermark_id="dag_b.sync")
    a, b = one.execute(ctx("scheduled__same")), two.execute(ctx("scheduled__same"))
    path_a, path_b = run_dir(tmp_path, a), run_dir(tmp_path, b)
    assert path_a != path_b
    source = sorted(r["ID"] for r in fake.records("crm/Accounts", 1001))
    assert sorted(ids(path_a)) == source and sorted(ids(path_b)) == source  # both keep every row
    assert json.loads((path_a / "_manifest.json").read_text())["export_id"] == "dag_a.sync"
