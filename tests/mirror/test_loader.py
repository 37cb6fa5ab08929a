"""The SQL mirror on real SQLite and real PostgreSQL: export runs from the fake, applied exactly once."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import pytest
from airflow_db import ctx

from airflow_provider_exactonline.catalog import resolve_entity
from airflow_provider_exactonline.mirror.bulk import sql_value
from airflow_provider_exactonline.mirror.loader import MirrorLoader
from airflow_provider_exactonline.mirror.schema import table_for
from airflow_provider_exactonline.operators.exactonline import ExactOnlineToObjectStorageOperator
from airflow_provider_exactonline.operators.watermark import MemoryWatermarkStore

DIVISION = 1001


@pytest.fixture(params=["sqlite", "postgres"])
def db_hook(request: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    if request.param == "sqlite":
        from airflow.providers.sqlite.hooks.sqlite import SqliteHook

        sqlite_conn = {"conn_type": "sqlite", "host": str(tmp_path / "m.db")}
        monkeypatch.setenv("AIRFLOW_CONN_MIRROR_DB", json.dumps(sqlite_conn))
        yield SqliteHook(sqlite_conn_id="mirror_db")
        return
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from rotation_support import fresh_pg_database

    with fresh_pg_database() as url:
        name = url.rsplit("/", 1)[1]
        monkeypatch.setenv("AIRFLOW_CONN_MIRROR_DB", f"postgres://postgres@127.0.0.1:5432/{name}")
        yield PostgresHook(postgres_conn_id="mirror_db")


def _norm(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (bool, int, float, decimal.Decimal)):
        return float(value)
    if value is not None and not isinstance(value, str):
        return str(value)
    return value.lower() if isinstance(value, str) and len(value) == 36 and value.count("-") == 4 else value


def table_rows(db_hook: Any, loader: MirrorLoader) -> dict[str, dict[str, Any]]:
    conn = db_hook.get_conn()
    try:
        cur = conn.cursor()
        cur.execute(f'SELECT * FROM "{loader.table.name}"')
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()
    keys = [str(r[loader.table.key]).lower() for r in rows]
    assert len(keys) == len(set(keys)), "duplicate key in the table"
    return {k: {n: _norm(v) for n, v in r.items()} for k, r in zip(keys, rows, strict=True)}


def fake_rows(fake: Any, loader: MirrorLoader, columns: list[str]) -> dict[str, dict[str, Any]]:
    by_name = {c.name: c for c in loader.table.columns}
    out = {}
    for record in fake.records("crm/Accounts", DIVISION):
        out[str(record["ID"]).lower()] = {
            c: _norm(sql_value(record.get(c), by_name.get(c))) for c in columns if c in record
        }
    return out


def assert_equal(db_hook: Any, fake: Any, loader: MirrorLoader) -> None:
    table = table_rows(db_hook, loader)
    columns = list(next(iter(table.values())).keys())
    source = fake_rows(fake, loader, columns)
    assert set(table) == set(source)
    for key, row in source.items():
        assert {c: table[key][c] for c in row} == row, key


def test_full_then_three_incremental_runs_equal_the_fake_and_reapply_is_a_no_op(fake, conn, tmp_path, db_hook):
    store = MemoryWatermarkStore()
    spec = resolve_entity("crm/Accounts")
    loader = MirrorLoader(db_hook, table_for(spec)).for_entity_type(spec.deleted_entity_type)

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
