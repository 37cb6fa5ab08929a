"""The mirror example DAG with dag.test(): fake Exact Online -> SQLite, full then incremental, tables equal the fake."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

from conftest import load_module

ENTITIES = ["crm/Accounts", "crm/Contacts", "financial/GLAccounts"]


def _count(db: str, table: str, division: int) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE "Division" = ?', (division,)).fetchone()[0])


def _ids(db: str, table: str, division: int) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {
            str(r[0]).lower() for r in conn.execute(f'SELECT "ID" FROM "{table}" WHERE "Division" = ?', (division,))
        }


def test_mirror_dag_full_then_incremental_equals_the_fake(fake, tmp_path, monkeypatch):
    db = str(tmp_path / "mirror.db")
    monkeypatch.setenv("AIRFLOW_CONN_EXACTONLINE_MIRROR_DB", json.dumps({"conn_type": "sqlite", "host": db}))
    monkeypatch.setenv("EXACTONLINE_MIRROR_ENTITIES", ",".join(ENTITIES))
    monkeypatch.setenv("EXACTONLINE_MIRROR_PATH", f"file://{tmp_path / 'exports'}")
    example = load_module("exactonline_mirror")
    first = example.dag.test(logical_date=dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc))
    assert first.state == "success"
    for entity in ENTITIES:
        table = entity.replace("/", "_").lower()
        for division in (1001, 1002):
            assert _count(db, table, division) == fake.record_count(entity, division)

    victim = next(iter(fake.records("crm/Accounts", 1001)))["ID"]
    fake.delete_record("crm/Accounts", 1001, victim)
    created = fake.create_record("crm/Accounts", 1002, {"Name": "Nieuw BV", "Code": "NIEUW"})
    second = example.dag.test(logical_date=dt.datetime(2024, 5, 1, 11, tzinfo=dt.timezone.utc))
    assert second.state == "success"
    for division in (1001, 1002):
        assert _ids(db, "crm_accounts", division) == {
            str(r["ID"]).lower() for r in fake.records("crm/Accounts", division)
        }
    assert created["ID"].lower() in _ids(db, "crm_accounts", 1002)
    assert victim.lower() not in _ids(db, "crm_accounts", 1001)
