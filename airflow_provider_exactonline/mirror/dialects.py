"""SQL per database: column types from Edm types, upsert statements, column comments, introspection.

Each dialect names its load path (``bulk.py``): ``copy`` (PostgreSQL: COPY into a staging table, one
``INSERT ... SELECT ... ON CONFLICT``), ``upsert`` (SQLite: batched ``executemany`` of ``ON CONFLICT``),
``merge`` (:class:`MergeDialect`: a staging table and one standard ``MERGE``, for databases that have
``MERGE`` but no ``ON CONFLICT``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.mirror.schema import Column, Table


class Dialect:
    """ANSI-ish defaults; subclasses override what their database does differently."""

    name = "ansi"
    placeholder = "%s"
    load_path = "upsert"
    types = {
        "Edm.Guid": "VARCHAR(36)",
        # Every integer as BIGINT: a value wider than its Edm type (the fake serves some) must not fail a run.
        "Edm.Int16": "BIGINT",
        "Edm.Int32": "BIGINT",
        "Edm.Int64": "BIGINT",
        "Edm.Byte": "BIGINT",
        "Edm.SByte": "BIGINT",
        "Edm.Double": "DOUBLE PRECISION",
        "Edm.Decimal": "NUMERIC(38, 10)",
        "Edm.Boolean": "BOOLEAN",
        "Edm.DateTime": "TIMESTAMP",
        "Edm.String": "TEXT",
    }
    supports_comments = False

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def column_type(self, column: Column) -> str:
        return self.types.get(column.edm_type, self.types["Edm.String"])

    def create_table(self, table: Table) -> list[str]:
        cols = ", ".join(f"{self.quote(c.name)} {self.column_type(c)}" for c in table.columns)
        pk = f"PRIMARY KEY ({self.quote('Division')}, {self.quote(table.key)})"
        statements = [f"CREATE TABLE IF NOT EXISTS {self.quote(table.name)} ({cols}, {pk})"]
        return statements + self.comments(table, table.columns)

    def add_column(self, table: Table, column: Column) -> list[str]:
        add = f"ALTER TABLE {self.quote(table.name)} ADD COLUMN {self.quote(column.name)} {self.column_type(column)}"
        return [add, *self.comments(table, [column])]

    def comments(self, table: Table, columns: Sequence[Column]) -> list[str]:
        if not self.supports_comments:
            return []
        table_name = self.quote(table.name)
        return [
            f"COMMENT ON COLUMN {table_name}.{self.quote(c.name)} IS '{c.description.replace(chr(39), chr(39) * 2)}'"
            for c in columns
            if c.description
        ]

    def existing_columns(self, cursor: Any, table: str) -> list[str] | None:
        cursor.execute(
            f"SELECT column_name FROM information_schema.columns WHERE table_name = {self.placeholder}", (table,)
        )
        rows = cursor.fetchall()
        return [r[0] for r in rows] or None

    def upsert(self, table: Table, columns: Sequence[str]) -> str:
        """One row's upsert that never replaces a newer row (higher ``Timestamp``) with an older one."""
        q, t = self.quote, self.quote(table.name)
        names = ", ".join(q(c) for c in columns)
        values = ", ".join([self.placeholder] * len(columns))
        keys = (q("Division"), q(table.key))
        updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in columns if c not in ("Division", table.key))
        guard = ""
        if "Timestamp" in columns:
            guard = f" WHERE {t}.{q('Timestamp')} IS NULL OR excluded.{q('Timestamp')} >= {t}.{q('Timestamp')}"
        conflict = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}{guard}"
        return f"INSERT INTO {t} ({names}) VALUES ({values}) {conflict}"

    def delete(self, table: Table) -> str:
        """Delete one key when the deletion is at least as new as the row (a re-created row survives)."""
        q, p = self.quote, self.placeholder
        return (
            f"DELETE FROM {q(table.name)} WHERE {q('Division')} = {p} AND {q(table.key)} = {p} "
            f"AND ({q('Timestamp')} IS NULL OR {q('Timestamp')} <= {p})"
        )

    def integer(self, column: Column) -> bool:
        return column.edm_type in ("Edm.Int16", "Edm.Int32", "Edm.Int64", "Edm.Byte", "Edm.SByte")


class MergeDialect(Dialect):
    """Standard SQL: a temporary staging table and one ``MERGE`` (tested on PostgreSQL 15's ``MERGE``)."""

    name = "merge"
    load_path = "merge"


class PostgresDialect(Dialect):
    name = "postgresql"
    load_path = "copy"
    types = {**Dialect.types, "Edm.Guid": "UUID", "Edm.DateTime": "TIMESTAMP"}
    supports_comments = True

    def existing_columns(self, cursor: Any, table: str) -> list[str] | None:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s",
            (table,),
        )
        return [r[0] for r in cursor.fetchall()] or None


class SqliteDialect(Dialect):
    name = "sqlite"
    placeholder = "?"
    types = {
        **Dialect.types,
        "Edm.Guid": "TEXT",
        "Edm.Double": "REAL",
        "Edm.Decimal": "NUMERIC",
        "Edm.Boolean": "INTEGER",
        "Edm.DateTime": "TEXT",
    }

    def existing_columns(self, cursor: Any, table: str) -> list[str] | None:
        cursor.execute(f"PRAGMA table_info({self.quote(table)})")
        return [r[1] for r in cursor.fetchall()] or None


DIALECTS = {"postgresql": PostgresDialect, "postgres": PostgresDialect, "sqlite": SqliteDialect}


def dialect_for(hook: Any) -> Dialect:
    """The dialect of a common-sql ``DbApiHook`` (by its connection type / dialect name)."""
    name = str(getattr(hook, "dialect_name", "") or getattr(hook, "conn_type", "") or "").lower()
    if name not in DIALECTS:
        conn_name_attr = getattr(hook, "conn_name_attr", "")
        name = {"postgres_conn_id": "postgresql", "sqlite_conn_id": "sqlite"}.get(conn_name_attr, name)
    if name not in DIALECTS:
        raise ExactOnlineConfigError(
            f"The SQL mirror has no dialect for {name or type(hook).__name__!r}; supported: PostgreSQL, SQLite"
        )
    return DIALECTS[name]()
