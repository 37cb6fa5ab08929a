"""The SQL mirror on real SQLite and real PostgreSQL: export runs from the fake, applied exactly once."""

from __future__ import annotations

from typing import Any

from airflow_db import ctx
from support import assert_equal, table_rows

from airflow_provider_exactonline.catalog import resolve_entity
from airflow_provider_exactonline.mirror.loader import MirrorLoader
from airflow_provider_exactonline.mirror.schema import table_for
from airflow_provider_exactonline.operators.exactonline import ExactOnlineToObjectStorageOperator
from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

DIVISION = 1001


def test_full_then_three_incremental_runs_equal_the_fake_and_reapply_is_a_no_op(fake, conn, tmp_path, target):
    db_hook = target.hook
    store = MemoryWatermarkStore()
    spec = resolve_entity("crm/Accounts")
    loader = MirrorLoader(db_hook, table_for(spec), target.dialect, batch_rows=40).for_entity_type(
        spec.deleted_entity_type
    )

    def cycle(run: str) -> dict[str, Any]:
        op = ExactOnlineToObjectStorageOperator(
            task_id="export",
            entity="crm/Accounts",
            divisions=DIVISION,
            mode="incremental",
            path=str(tmp_path / "exports"),
            watermark_store=store,
            **conn,
        )
        summary = op.execute(ctx(run))
        from airflow.sdk import ObjectStoragePath

        export_dir = ObjectStoragePath(summary["divisions"][0]["path"]).parent
        return loader.apply_pending(export_dir, DIVISION)

    first = cycle("run0")
    assert first["runs"] == 1 and first["rows"] == 150
    assert_equal(db_hook, fake, loader)
    ids = [r["ID"] for r in fake.records("crm/Accounts", DIVISION)]
    for n in range(1, 4):
        created = fake.create_record("crm/Accounts", DIVISION, {"Name": f"New {n}", "Code": f"NEW{n}"})
        fake.update_record("crm/Accounts", DIVISION, ids[n], {"Name": f"Renamed {n}"})
        fake.update_record("crm/Accounts", DIVISION, ids[n], {"City": f"Twice {n}"})  # the key changes twice
        fake.delete_record("crm/Accounts", DIVISION, ids[10 + n])
        gone = ids[20 + n]
        fake.delete_record("crm/Accounts", DIVISION, gone)
        fake.create_record("crm/Accounts", DIVISION, {"ID": gone, "Name": f"Re-created {n}", "Code": f"RE{n}"})
        result = cycle(f"run{n}")
        assert result["runs"] == 1 and result["deletes"] == 2, result
        assert_equal(db_hook, fake, loader)
        assert created["ID"].lower() in table_rows(db_hook, loader)

    before = table_rows(db_hook, loader)
    export_dir = next((tmp_path / "exports").rglob("_manifest.json")).parent.parent
    from airflow.sdk import ObjectStoragePath

    again = loader.apply_pending(ObjectStoragePath(f"file://{export_dir}"), DIVISION)
    assert again["runs"] == 0 and again["skipped"] == 4
    for _manifest, run_dir in loader.finalized_runs(ObjectStoragePath(f"file://{export_dir}")):
        assert loader.apply_run(run_dir, DIVISION)["applied"] is False
    assert table_rows(db_hook, loader) == before
