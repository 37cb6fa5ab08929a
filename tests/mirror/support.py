"""Comparing a mirrored table with the fake, field by field."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

from airflow_provider_exactonline.mirror.bulk import sql_value
from airflow_provider_exactonline.mirror.loader import STATE_TABLE, MirrorLoader


def norm(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (bool, int, float, decimal.Decimal)):
        return float(value)
    if value is not None and not isinstance(value, str):
        return str(value)
    return value.lower() if isinstance(value, str) and len(value) == 36 and value.count("-") == 4 else value


def table_rows(db_hook: Any, loader: MirrorLoader, division: int | None = None) -> dict[str, dict[str, Any]]:
    """key -> row (normalized); fails on a duplicate key."""
    conn = db_hook.get_conn()
    try:
        cur = conn.cursor()
        where = f' WHERE "Division" = {int(division)}' if division is not None else ""
        cur.execute(f'SELECT * FROM "{loader.table.name}"{where}')
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()
    keys = [str(r[loader.table.key]).lower() for r in rows]
    assert len(keys) == len(set(keys)), "duplicate key in the table"
    return {k: {n: norm(v) for n, v in r.items()} for k, r in zip(keys, rows, strict=True)}


def fake_rows(fake: Any, loader: MirrorLoader, entity: str, division: int, columns: list[str]) -> dict[str, Any]:
    by_name = {c.name: c for c in loader.table.columns}
    out = {}
    for record in fake.records(entity, division):
        key = str(record[loader.table.key]).lower()
        out[key] = {c: norm(sql_value(record.get(c), by_name.get(c))) for c in columns if c in record}
    return out


def assert_equal(db_hook: Any, fake: Any, loader: MirrorLoader, entity: str = "crm/Accounts", division: int = 1001):
    """The table's rows of ``division`` equal the fake's live rows, every field."""
    table = table_rows(db_hook, loader, division)
    source = fake_rows(fake, loader, entity, division, loader.table.column_names)
    assert set(table) == set(source), (len(table), len(source))
    for key, row in source.items():
        assert {c: table[key][c] for c in row} == row, key


def state_rows(db_hook: Any, table: str) -> list[tuple[Any, ...]]:
    conn = db_hook.get_conn()
    try:
        cur = conn.cursor()
        cur.execute(f'SELECT "division", "run_key" FROM "{STATE_TABLE}" WHERE "table_name" = \'{table}\'')
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()
