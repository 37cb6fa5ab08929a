"""The mirror DAG with dag.test(): fake Exact Online -> SQLite (the example DAG) and PostgreSQL (two DAGs on one
export root), full then incremental, tables equal the fake; one sync/Deleted read per division per run."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import load_module

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

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
    fake.reset_counters()
    second = example.dag.test(logical_date=dt.datetime(2024, 5, 1, 11, tzinfo=dt.timezone.utc))
    assert second.state == "success"
    assert deleted_reads(fake) == {1001: 1, 1002: 1}  # one for the three entities, per division
    for division in (1001, 1002):
        assert _ids(db, "crm_accounts", division) == {
            str(r["ID"]).lower() for r in fake.records("crm/Accounts", division)
        }
    assert created["ID"].lower() in _ids(db, "crm_accounts", 1002)
    assert victim.lower() not in _ids(db, "crm_accounts", 1001)


def deleted_reads(fake: Any) -> Counter[int]:
    """``sync/Deleted`` requests per division in the fake's request log."""
    counts: Counter[int] = Counter()
    for endpoint, count in fake.stats()["requests_per_endpoint"].items():
        if endpoint.lower().endswith("/sync/deleted"):
            counts[int(endpoint.split("/api/v1/")[1].split("/")[0])] += count
    return counts


def _pg_rows(url: str, table: str) -> dict[int, set[tuple[str, int]]]:
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT "Division", "ID", "Timestamp" FROM "{table}"')
        out: dict[int, set[tuple[str, int]]] = {}
        for division, key, ts in cur.fetchall():
            out.setdefault(int(division), set()).add((str(key).lower(), int(ts)))
    conn.close()
    return out


def _fake_rows(fake: Any, entity: str) -> dict[int, set[tuple[str, int]]]:
    return {d: {(str(r["ID"]).lower(), int(r["Timestamp"])) for r in fake.records(entity, d)} for d in (1001, 1002)}


#: Two mirror DAGs in one file of their own DAG bundle (``dag.test()`` runs DAGs the bundles hold).
TWO_DAGS = """
import os
from airflow_provider_exactonline.mirror.dag import mirror_dag

root, entities = os.environ["MIRROR_TEST_ROOT"], ["crm/Accounts", "crm/Contacts"]
dag_a = mirror_dag("mirror_pg_a", entities=entities, db_conn_id="mirror_pg", path=root, table_prefix="a_")
dag_b = mirror_dag("mirror_pg_b", entities=entities, db_conn_id="mirror_pg", path=root, table_prefix="b_")
"""


def test_two_mirror_dags_on_one_root_into_postgresql_both_keep_every_row(fake, tmp_path, monkeypatch):
    import importlib.util

    from rotation_support import fresh_pg_database

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "two_mirrors.py").write_text(TWO_DAGS)
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "mirror-two-dags", "classpath": local, "kwargs": {"path": str(bundle), "refresh_interval": 0}},
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    monkeypatch.setenv("MIRROR_TEST_ROOT", f"file://{tmp_path / 'exports'}")
    spec = importlib.util.spec_from_file_location("two_mirrors", bundle / "two_mirrors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with fresh_pg_database() as url:
        monkeypatch.setenv("AIRFLOW_CONN_MIRROR_PG", url.replace("postgresql+psycopg2://", "postgres://", 1))
        plain = url.replace("postgresql+psycopg2://", "postgresql://", 1)
        when = dt.datetime(2024, 5, 2, 10, tzinfo=dt.timezone.utc)
        for hour, change in enumerate((None, "delete", "recreate")):
            if change == "delete":
                fake.delete_record("crm/Accounts", 1001, next(iter(fake.records("crm/Accounts", 1001)))["ID"])
                fake.update_record("crm/Contacts", 1002, next(iter(fake.records("crm/Contacts", 1002)))["ID"], {})
            if change == "recreate":
                gone = next(iter(fake.records("crm/Accounts", 1002)))["ID"]
                fake.delete_record("crm/Accounts", 1002, gone)
                fake.create_record("crm/Accounts", 1002, {"ID": gone, "Name": "Back", "Code": "BACK"})
            for dag in (module.dag_a, module.dag_b):
                run = dag.test(logical_date=when + dt.timedelta(hours=hour))
                assert run.state == "success", dag.dag_id
            for prefix in ("a_", "b_"):
                assert _pg_rows(plain, f"{prefix}crm_accounts") == _fake_rows(fake, "crm/Accounts"), (hour, prefix)
                assert _pg_rows(plain, f"{prefix}crm_contacts") == _fake_rows(fake, "crm/Contacts"), (hour, prefix)
