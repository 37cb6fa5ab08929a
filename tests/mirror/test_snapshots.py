"""Entities without a sync endpoint: read whole each run and applied as a snapshot (what it lacks is deleted),
on SQLite, PostgreSQL (both COPY paths) and the standard MERGE path."""

from __future__ import annotations

import math

import pytest
from support import assert_equal, table_rows

from airflow_provider_exactonline.catalog import resolve_entity
from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
from airflow_provider_exactonline.mirror.dag import mirror_one
from airflow_provider_exactonline.mirror.loader import MirrorLoader
from airflow_provider_exactonline.mirror.schema import table_for
from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

ENTITY = "cashflow/PaymentConditions"  # standard endpoint only: 60 rows a page
DIVISIONS = (1001, 1002)

pytestmark = pytest.mark.fake_exact_online(rows={ENTITY: 70})


def test_snapshots_delete_what_exact_no_longer_has_and_leave_other_divisions_alone(fake, conn, tmp_path, target):
    assert not resolve_entity(ENTITY).has_variant("sync")
    store = MemoryWatermarkStore()
    loader = MirrorLoader(target.hook, table_for(resolve_entity(ENTITY)), target.dialect)

    def run(run_id: str, division: int) -> dict:
        hook = ExactOnlineHook(conn["exactonline_conn_id"], **conn["hook_params"])
        return mirror_one(
            exactonline_conn_id=conn["exactonline_conn_id"],
            db_conn_id=target.conn_id,
            entity=ENTITY,
            division=division,
            path=f"file://{tmp_path / 'exports'}",
            run_id=run_id,
            watermark_id="snap.mirror",
            watermark_store=store,
            deletions_watermark_id="snap.deletions",  # what the DAG passes: no sync/Deleted for this entity
            hook=hook,
        )

    for division in DIVISIONS:
        first = run("run0", division)
        assert first["rows"] == 70 and first["deletes"] == 0
        assert first["api_calls"] == math.ceil(70 / 60)
        assert_equal(target.hook, fake, loader, ENTITY, division)

    ids = [r["ID"] for r in fake.records(ENTITY, 1001)]
    fake.create_record(ENTITY, 1001, {"Code": "NEW", "Description": "New"})
    fake.update_record(ENTITY, 1001, ids[1], {"Description": "Changed"})
    fake.delete_record(ENTITY, 1001, ids[2])
    fake.delete_record(ENTITY, 1001, ids[3])
    second = run("run1", 1001)
    assert second["runs"] == 1 and second["rows"] == 69 and second["deletes"] == 2, second
    assert_equal(target.hook, fake, loader, ENTITY, 1001)
    assert len(table_rows(target.hook, loader, 1002)) == 70  # another division's rows stay

    for record in list(fake.records(ENTITY, 1001)):  # everything deleted in Exact: an empty snapshot
        fake.delete_record(ENTITY, 1001, record["ID"])
    emptied = run("run2", 1001)
    assert emptied["rows"] == 0 and emptied["deletes"] == 69, emptied
    assert table_rows(target.hook, loader, 1001) == {}
    assert_equal(target.hook, fake, loader, ENTITY, 1002)


def test_a_run_read_with_a_filter_is_not_a_snapshot(fake, conn, tmp_path, target):
    """A filtered full export read only some rows: applying it must not delete the others."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_exactonline.operators.export import DivisionExport

    spec = resolve_entity(ENTITY)
    loader = MirrorLoader(target.hook, table_for(spec), target.dialect)
    hook = ExactOnlineHook(conn["exactonline_conn_id"], **conn["hook_params"])
    code = next(iter(fake.records(ENTITY, 1001)))["Code"]
    manifests = []
    for run_id, query in (("all", None), ("one", f"Code eq '{code}'")):
        job = DivisionExport(
            hook=hook,
            conn_id=conn["exactonline_conn_id"],
            spec=spec,
            entity=ENTITY,
            mode="full",
            division=1001,
            base=ObjectStoragePath(f"file://{tmp_path / 'exports'}"),
            run_name=run_id,
            run_id=run_id,
            try_number=1,
            filter=query,
        )
        job.run()
        manifests.append(job.read_manifest())
        loader.apply_run(job.final_dir, 1001)
    assert [m["snapshot"] for m in manifests] == [True, False]
    assert len(table_rows(target.hook, loader, 1001)) == 70
