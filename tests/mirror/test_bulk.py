"""The load paths (COPY, executemany upsert, MERGE) on hand-made runs in every export format.

Small batches (2 rows) so a key's versions land in different batches: dedup must hold across them.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_exactonline.catalog import resolve_entity
from airflow_provider_exactonline.mirror.loader import MirrorLoader
from airflow_provider_exactonline.mirror.schema import table_for
from airflow_provider_exactonline.operators.writers import open_writer

DIVISION = 7
A, B, C = (str(uuid.UUID(int=n)) for n in (1, 2, 3))


def write_run(root: Path, name: str, fmt: str, rows: list[dict[str, Any]], deleted: list[dict[str, Any]] = ()) -> Any:
    from airflow.sdk import ObjectStoragePath

    run = root / name
    run.mkdir(parents=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    types = {"Timestamp": "Edm.Int64", "Created": "Edm.DateTime", "Name": "Edm.String", "Status": "Edm.Int16"}
    manifest: dict[str, Any] = {"format": fmt, "fields": fields, "started_at": name, "parts": [], "deleted_parts": []}
    for kind, records in (("part", rows), ("deleted", list(deleted))):
        for index in range(0, len(records), 3):  # 3 rows per part: several parts
            file = f"{kind}-{index:05d}.{fmt}"
            writer = open_writer(fmt, ObjectStoragePath(f"file://{run / file}"), None, types)
            writer.write_page(records[index : index + 3])
            writer.close()
            manifest["parts" if kind == "part" else "deleted_parts"].append({"file": file, "rows": writer.rows})
    (run / "_manifest.json").write_text(json.dumps(manifest))
    return ObjectStoragePath(f"file://{run}")


def row(key: str, ts: int, name: str, **extra: Any) -> dict[str, Any]:
    return {"ID": key, "Timestamp": ts, "Name": name, "Created": f"/Date({1700000000000 + ts})/", "Status": 1, **extra}


def table(target: Any, loader: MirrorLoader) -> dict[str, dict[str, Any]]:
    conn = target.hook.get_conn()
    try:
        cur = conn.cursor()
        cur.execute(f'SELECT * FROM "{loader.table.name}"')
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()
    return {str(r["ID"]).lower(): r for r in rows}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_dedup_across_batches_guards_and_schema_drift(target, tmp_path, fmt):
    loader = MirrorLoader(target.hook, table_for(resolve_entity("crm/Accounts")), target.dialect, batch_rows=2)
    first = [row(A, 10, "a1"), row(B, 20, "b1"), row(C, 5, "c1"), row(A, 30, "a3"), row(A, 25, "a2")]
    assert loader.apply_run(write_run(tmp_path, "r1", fmt, first), DIVISION) == {
        "applied": True,
        "rows": 5,
        "deletes": 0,
    }
    rows = table(target, loader)
    assert {k: (int(r["Timestamp"]), r["Name"]) for k, r in rows.items()} == {
        A: (30, "a3"),
        B: (20, "b1"),
        C: (5, "c1"),
    }
    assert str(rows[A]["Created"])[:23].replace(" ", "T") == "2023-11-14T22:13:20.030"
    assert {int(r["Division"]) for r in rows.values()} == {DIVISION}

    # An older version never replaces a newer row; a field that appears later becomes a column.
    second = [row(A, 28, "stale"), row(B, 40, "b2", NewField="drift")]
    loader.apply_run(write_run(tmp_path, "r2", fmt, second), DIVISION)
    rows = table(target, loader)
    assert rows[A]["Name"] == "a3" and rows[B]["Name"] == "b2" and rows[B]["NewField"] == "drift"
    assert rows[C]["NewField"] is None

    # A deletion applies only when at least as new as the row: A (ts 30) survives a deletion at 29.
    deleted = [
        {"EntityKey": A, "Timestamp": 29, "EntityType": 2},
        {"EntityKey": B, "Timestamp": 40, "EntityType": 2},
        {"EntityKey": C, "Timestamp": 50, "EntityType": 2},
        {"EntityKey": C, "Timestamp": 6, "EntityType": 2},  # the same key twice
    ]
    result = loader.apply_run(write_run(tmp_path, "r3", fmt, [], deleted), DIVISION)
    assert result["deletes"] == 4
    assert set(table(target, loader)) == {A}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_empty_string_null_and_special_characters_load_as_written(target, tmp_path, fmt):
    loader = MirrorLoader(target.hook, table_for(resolve_entity("crm/Accounts")), target.dialect)
    names = {A: "", B: None, C: 'Quote " comma, new\nline'}
    loader.apply_run(write_run(tmp_path, "r1", fmt, [row(key, 1, name) for key, name in names.items()]), DIVISION)
    assert {key: r["Name"] for key, r in table(target, loader).items()} == names


def test_csv_without_pyarrow_loads_an_empty_string_as_null(target, tmp_path, monkeypatch):
    """Python's csv module cannot tell "" from a missing value; docs/mirror.md says so."""
    monkeypatch.setitem(sys.modules, "pyarrow.csv", None)  # import pyarrow.csv now raises ImportError
    loader = MirrorLoader(target.hook, table_for(resolve_entity("crm/Accounts")), target.dialect)
    loader.apply_run(write_run(tmp_path, "r1", "csv", [row(A, 1, ""), row(B, 1, "b,1")]), DIVISION)
    assert {key: r["Name"] for key, r in table(target, loader).items()} == {A: None, B: "b,1"}
