"""Apply export runs to SQL tables, exactly once.

For one (table, division), :meth:`MirrorLoader.apply_pending` applies every finalized run directory
(``_manifest.json`` present) not yet recorded in the state table, oldest first. One run = one
transaction: create/alter the table, upsert the rows (a key twice in a run keeps its highest
``Timestamp``; a row never replaces a newer one), apply the deletions (only where the deletion's
``Timestamp`` is at least the row's, so a re-created row survives), and insert the state row. A
killed load rolls back whole; re-applying a recorded run is a no-op.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.mirror.dialects import Dialect, dialect_for
from airflow_provider_exactonline.mirror.schema import Column, Table
from airflow_provider_exactonline.operators.export import MANIFEST, iter_output_records

STATE_TABLE = "exactonline_mirror_runs"
BATCH_ROWS = 1000


def _sql_value(value: Any, column: Column | None) -> Any:
    if value is None:
        return None
    edm = column.edm_type if column is not None else None
    if isinstance(value, str) and edm == "Edm.DateTime" and odata.is_date(value):
        parsed = odata.parse_date(value, "UTC")
        return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat() if parsed else None
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _executemany(cur: Any, statement: str, batch: list[tuple[Any, ...]]) -> None:
    """psycopg2's ``executemany`` is one round trip per row; ``execute_batch`` sends pages of statements."""
    if type(cur).__module__.startswith("psycopg2"):
        from psycopg2.extras import execute_batch

        execute_batch(cur, statement, batch, page_size=200)
    else:
        cur.executemany(statement, batch)


def _dedupe(records: Iterable[Mapping[str, Any]], key: str) -> dict[Any, Mapping[str, Any]]:
    """Key -> its record with the highest ``Timestamp`` (Exact's sync results may repeat a key)."""
    latest: dict[Any, Mapping[str, Any]] = {}
    for record in records:
        k = str(record.get(key)).lower()
        old = latest.get(k)
        if old is None or int(record.get("Timestamp") or 0) >= int(old.get("Timestamp") or 0):
            latest[k] = record
    return latest


class MirrorLoader:
    """Load export runs of one entity into its table through a common-sql ``DbApiHook``."""

    def __init__(self, db_hook: Any, table: Table, dialect: Dialect | None = None, log: Any = None) -> None:
        self.db_hook = db_hook
        self.table = table
        self.dialect = dialect or dialect_for(db_hook)
        self.log = log

    def _info(self, msg: str, *args: Any) -> None:
        if self.log is not None:
            self.log.info(msg, *args)

    # -- state

    def _ensure_state(self, cur: Any) -> None:
        q = self.dialect.quote
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {q(STATE_TABLE)} ({q('table_name')} VARCHAR(200) NOT NULL, "
            f"{q('division')} INTEGER NOT NULL, {q('run_key')} VARCHAR(500) NOT NULL, {q('applied_at')} VARCHAR(40), "
            f"{q('rows')} INTEGER, {q('deletes')} INTEGER, "
            f"PRIMARY KEY ({q('table_name')}, {q('division')}, {q('run_key')}))"
        )

    def applied_runs(self, division: int) -> set[str]:
        conn = self.db_hook.get_conn()
        try:
            cur = conn.cursor()
            self._ensure_state(cur)
            conn.commit()
            return self._applied(cur, division)
        finally:
            conn.close()

    def _applied(self, cur: Any, division: int) -> set[str]:
        q, p = self.dialect.quote, self.dialect.placeholder
        cur.execute(
            f"SELECT {q('run_key')} FROM {q(STATE_TABLE)} WHERE {q('table_name')} = {p} AND {q('division')} = {p}",
            (self.table.name, division),
        )
        return {r[0] for r in cur.fetchall()}

    # -- schema

    def _ensure_table(self, cur: Any, fields: Iterable[str]) -> list[str]:
        existing = self.dialect.existing_columns(cur, self.table.name)
        if existing is None:
            for statement in self.dialect.create_table(self.table):
                cur.execute(statement)
            existing = self.table.column_names
        have = set(existing)
        by_name = {c.name: c for c in self.table.columns}
        for name in fields:  # schema drift: a field that appears later becomes a column
            if name not in have:
                column = by_name.get(name, Column(name, "Edm.String"))
                for statement in self.dialect.add_column(self.table, column):
                    cur.execute(statement)
                have.add(name)
                existing.append(name)
        return existing

    # -- runs

    @staticmethod
    def run_key(manifest: Mapping[str, Any], run_dir: Any) -> str:
        """Identifies one finalized export try: its directory and when it started."""
        return f"{run_dir.parent.name}/{run_dir.name}@{manifest.get('started_at')}"

    @staticmethod
    def finalized_runs(export_dir: Any, export_id: str | None = None) -> list[tuple[dict[str, Any], Any]]:
        """``(manifest, run_dir)`` of every finished run under a division directory, oldest first.

        ``export_id`` (the export's watermark id) keeps only that export's runs; other DAGs may write there too.
        """
        found = []
        if not export_dir.exists():
            return []
        for child in export_dir.iterdir():
            path = child / MANIFEST
            if child.name.startswith("_") or not path.exists():
                continue
            manifest = json.loads(path.read_text())
            if export_id is None or manifest.get("export_id") == export_id:
                found.append((manifest, child))
        return sorted(found, key=lambda item: str(item[0].get("started_at")))

    def apply_pending(
        self, export_dir: Any, division: int, export_id: str | None = None, deletion_runs: Iterable[Any] = ()
    ) -> dict[str, Any]:
        """Apply, oldest first, every finished run of ``export_dir`` (and given deletion runs) not yet applied."""
        runs = self.finalized_runs(export_dir, export_id)
        runs += [(json.loads((d / MANIFEST).read_text()), d) for d in deletion_runs]
        runs.sort(key=lambda item: str(item[0].get("started_at")))
        applied = self.applied_runs(division)
        totals: dict[str, Any] = {"table": self.table.name, "division": division}
        totals.update(runs=0, rows=0, deletes=0, skipped=0)
        for manifest, run_dir in runs:
            if self.run_key(manifest, run_dir) in applied:
                totals["skipped"] += 1
                continue
            result = self.apply_run(run_dir, division, manifest)
            totals["runs"] += 1 if result["applied"] else 0
            totals["rows"] += result["rows"]
            totals["deletes"] += result["deletes"]
        return totals

    def apply_run(self, run_dir: Any, division: int, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apply one run in one transaction; a no-op when the state table already records it."""
        manifest = manifest or json.loads((run_dir / MANIFEST).read_text())
        key = self.run_key(manifest, run_dir)
        q, p = self.dialect.quote, self.dialect.placeholder
        conn = self.db_hook.get_conn()
        try:
            cur = conn.cursor()
            self._ensure_state(cur)
            if key in self._applied(cur, division):
                conn.rollback()
                return {"applied": False, "rows": 0, "deletes": 0}
            rows = _dedupe(iter_output_records(run_dir), self.table.key) if manifest.get("parts") else {}
            fields: dict[str, None] = dict.fromkeys(manifest.get("fields") or [])
            for record in rows.values():
                fields.update(dict.fromkeys(record))
            fields.pop("__metadata", None)
            columns = self._ensure_table(cur, fields) if rows or not manifest.get("deleted_parts") else None
            if columns is None:
                columns = self._ensure_table(cur, [])
            self._upsert(cur, [c for c in fields if c in set(columns)], rows.values(), division)
            deletes = self._delete(cur, self._deletions(run_dir, manifest), division)
            cur.execute(
                f"INSERT INTO {q(STATE_TABLE)} ({q('table_name')}, {q('division')}, {q('run_key')}, "
                f"{q('applied_at')}, {q('rows')}, {q('deletes')}) VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
                (self.table.name, division, key, dt.datetime.now(dt.timezone.utc).isoformat(), len(rows), deletes),
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()
        self._info(
            "Applied %s to %s division %s: %d rows, %d deletions", key, self.table.name, division, len(rows), deletes
        )
        return {"applied": True, "rows": len(rows), "deletes": deletes}

    def _deletions(self, run_dir: Any, manifest: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
        if not manifest.get("deleted_parts"):
            return iter(())
        wanted = self._entity_type
        return (
            r
            for r in iter_output_records(run_dir, "deleted")
            if wanted is None or r.get("EntityType") is None or int(r["EntityType"]) == wanted
        )

    #: Only deletions of this EntityType apply (None: all; set it for shared sync/Deleted runs).
    _entity_type: int | None = None

    def for_entity_type(self, entity_type: int | None) -> MirrorLoader:
        self._entity_type = entity_type
        return self

    def _upsert(self, cur: Any, columns: list[str], records: Iterable[Mapping[str, Any]], division: int) -> None:
        if "Division" not in columns:
            columns = ["Division", *columns]
        statement = self.dialect.upsert(self.table, columns)
        by_name = {c.name: c for c in self.table.columns}
        types = [by_name.get(c) for c in columns]
        batch: list[tuple[Any, ...]] = []
        for record in records:
            values = {**record, "Division": division}
            batch.append(tuple(_sql_value(values.get(c), t) for c, t in zip(columns, types, strict=True)))
            if len(batch) >= BATCH_ROWS:
                _executemany(cur, statement, batch)
                batch = []
        if batch:
            _executemany(cur, statement, batch)

    def _delete(self, cur: Any, deletions: Iterable[Mapping[str, Any]], division: int) -> int:
        statement = self.dialect.delete(self.table)
        batch = [(division, str(d["EntityKey"]).lower(), int(d.get("Timestamp") or 0)) for d in deletions]
        if batch:
            _executemany(cur, statement, batch)
        return len(batch)
