"""Apply export runs to SQL tables, exactly once.

For one (table, division), :meth:`MirrorLoader.apply_pending` applies every finalized run directory
(``_manifest.json`` present) not yet recorded in the state table: the entity's own runs oldest first,
then the division's shared ``sync/Deleted`` runs (``deletions.py``). One run = one transaction:
create/alter the table, stream the rows in batches through the dialect's load path (``bulk.py``: a key
twice in a run keeps its highest ``Timestamp``; a row never replaces a newer one), apply the deletions
(only where the deletion's ``Timestamp`` is at least the row's, so a re-created row survives), and
insert the state row. A killed load rolls back whole; re-applying a recorded run is a no-op.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_exactonline.mirror.bulk import LOADS
from airflow_provider_exactonline.mirror.dialects import Dialect, dialect_for
from airflow_provider_exactonline.mirror.parts import BATCH_ROWS, RunReader, read_manifest
from airflow_provider_exactonline.mirror.schema import Column, Table
from airflow_provider_exactonline.operators.export import MANIFEST

STATE_TABLE = "exactonline_mirror_runs"


class MirrorLoader:
    """Load export runs of one entity into its table through a common-sql ``DbApiHook``."""

    def __init__(
        self,
        db_hook: Any,
        table: Table,
        dialect: Dialect | None = None,
        log: Any = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.db_hook = db_hook
        self.table = table
        self.dialect = dialect or dialect_for(db_hook)
        self.log = log
        self.batch_rows = batch_rows
        self._columns: list[str] | None = None  # the table's columns, within one apply_run

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
        """Create the table, or add the fields it lacks as columns; returns its columns."""
        existing = self._columns
        if existing is None:
            existing = self.dialect.existing_columns(cur, self.table.name)
        if existing is None:
            for statement in self.dialect.create_table(self.table):
                cur.execute(statement)
            existing = self.table.column_names
        self._columns = existing
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
        self,
        export_dir: Any,
        division: int,
        export_id: str | None = None,
        deletions_dir: Any = None,
        deletions_id: str | None = None,
    ) -> dict[str, Any]:
        """Apply every finished, not yet applied run: the entity's own (``export_dir``), then shared deletions.

        Rows before deletions: a deletion applies only where it is at least as new as the row, so applying
        it after the rows read around the same time is right either way (a re-created row is newer).
        """
        runs = self.finalized_runs(export_dir, export_id)
        if deletions_dir is not None:
            runs += self.finalized_runs(deletions_dir, deletions_id)
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
        manifest = manifest or read_manifest(run_dir)
        key = self.run_key(manifest, run_dir)
        q, p = self.dialect.quote, self.dialect.placeholder
        reader = RunReader(run_dir, manifest, self.batch_rows)
        conn = self.db_hook.get_conn()
        self._columns = None
        try:
            cur = conn.cursor()
            self._ensure_state(cur)
            if key in self._applied(cur, division):
                conn.rollback()
                return {"applied": False, "rows": 0, "deletes": 0}
            self._ensure_table(cur, reader.fields())
            load = LOADS[self.dialect.load_path](self.dialect, self.table, self._ensure_table, self._progress)
            rows = load.rows(cur, reader, division) if reader.row_parts else 0
            deletes = load.deletions(cur, reader.deletion_batches(self._entity_type), division)
            if manifest.get("snapshot"):  # every row of the division: what it lacks was deleted in Exact
                deletes += load.sweep(cur, reader, division)
            cur.execute(
                f"INSERT INTO {q(STATE_TABLE)} ({q('table_name')}, {q('division')}, {q('run_key')}, "
                f"{q('applied_at')}, {q('rows')}, {q('deletes')}) VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
                (self.table.name, division, key, dt.datetime.now(dt.timezone.utc).isoformat(), rows, deletes),
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()
        self._info("Applied %s to %s division %s: %d rows, %d deletions", key, self.table.name, division, rows, deletes)
        return {"applied": True, "rows": rows, "deletes": deletes}

    def _progress(self, what: str, count: int) -> None:
        self._info("Sent %d %s of the run to %s", count, what, self.table.name)

    #: Only deletions of this EntityType apply (None: all).
    _entity_type: int | None = None

    def for_entity_type(self, entity_type: int | None) -> MirrorLoader:
        """Apply only deletions of ``entity_type`` (the table's entity) from shared ``sync/Deleted`` runs."""
        self._entity_type = entity_type
        return self
