"""The load paths: rows and deletions of one run into a table, inside the caller's transaction.

* :class:`TypedCopyLoad` (PostgreSQL through psycopg 3, the default): each batch of rows, typed by the
  client (``/Date(ms)/`` -> ``datetime``; nested values -> JSON), goes through ``COPY`` into a temporary
  staging table ``LIKE`` the target; then ONE ``INSERT ... SELECT ... WHERE _seq IN (SELECT DISTINCT ON
  (key) ...) ON CONFLICT DO UPDATE ... WHERE excluded."Timestamp" >= t."Timestamp"`` keeps the highest
  ``Timestamp`` per key across all batches and merges. ``INSERT ... ON CONFLICT`` rather than ``MERGE``:
  it is atomic against a concurrent insert of the same key (``MERGE`` raises a unique violation there)
  and PostgreSQL has it since 9.5, ``MERGE`` only since 15.
* :class:`CopyLoad` (PostgreSQL through psycopg2): the run's JSON Lines pass undecoded through ``COPY``
  into a staging table of ``jsonb`` documents; PostgreSQL types them (``jsonb_populate_record``). Less
  client CPU, about 8x more server CPU per row than the typed path (``benchmarks/bench_load.py``).
* :class:`UpsertLoad` (SQLite, and any database with ``ON CONFLICT``): batched ``executemany`` of the
  guarded upsert; a key seen twice keeps its highest ``Timestamp`` through the guard, across batches.
* :class:`MergeLoad` (:class:`~.dialects.MergeDialect`): ``executemany`` into a temporary staging table,
  then one standard ``MERGE`` from its highest-``Timestamp`` row per key (``ROW_NUMBER()``).

Deletions: a staged set (COPY or ``executemany``) and one ``DELETE`` per run where the database allows;
a deletion removes a row only when its ``Timestamp`` is at least the row's.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.mirror.dialects import Dialect
from airflow_provider_exactonline.mirror.parts import RunReader
from airflow_provider_exactonline.mirror.schema import Column, Table

STAGE = "_exactonline_mirror_stage"
STAGE_TYPE = "_exactonline_mirror_stage_row"
DELETED = "_exactonline_mirror_deleted"
KEPT = "_exactonline_mirror_kept"

#: ``ensure_columns(cursor, field names) -> the table's columns``: adds what is missing (schema drift).
EnsureColumns = Callable[[Any, Iterable[str]], list[str]]
Progress = Callable[[str, int], None]


def sql_value(value: Any, column: Column | None) -> Any:
    """A JSON value as a DB-API parameter: ``/Date(ms)/`` -> UTC ISO timestamp, objects -> JSON text."""
    if value is None:
        return None
    edm = column.edm_type if column is not None else None
    if isinstance(value, str) and edm == "Edm.DateTime" and odata.is_date(value):
        parsed = odata.parse_date(value, "UTC")
        return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat() if parsed else None
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool) and edm in _INTEGERS:
        return int(value)  # an Edm.Int field Exact (or the fake) serves as a boolean
    return value


_INTEGERS = frozenset({"Edm.Int16", "Edm.Int32", "Edm.Int64", "Edm.Byte", "Edm.SByte"})


def _executemany(cur: Any, statement: str, batch: list[tuple[Any, ...]]) -> None:
    """psycopg2's ``executemany`` is one round trip per row; ``execute_batch`` sends pages of statements."""
    if type(cur).__module__.startswith("psycopg2"):
        from psycopg2.extras import execute_batch

        execute_batch(cur, statement, batch, page_size=500)
    else:
        cur.executemany(statement, batch)


def _copy(cur: Any, statement: str, data: bytes) -> None:
    """``COPY ... FROM STDIN`` with psycopg 3 (``cursor.copy``) or psycopg2 (``copy_expert``)."""
    if hasattr(cur, "copy_expert"):
        cur.copy_expert(statement, io.BytesIO(data))
    else:
        with cur.copy(statement) as copy:
            copy.write(data)


def _deletion_key(record: Mapping[str, Any]) -> str:
    return str(record["EntityKey"]).lower()


class _Load:
    def __init__(self, dialect: Dialect, table: Table, ensure_columns: EnsureColumns, progress: Progress) -> None:
        self.dialect = dialect
        self.table = table
        self.ensure_columns = ensure_columns
        self.progress = progress
        self.by_name = {c.name: c for c in table.columns}

    def column(self, name: str) -> Column:
        return self.by_name.get(name) or Column(name, "Edm.String")

    def run_columns(self, reader: RunReader, existing: Iterable[str]) -> list[str]:
        """``Division`` + the run's fields that are columns (the rest of a row's columns stay as they are)."""
        have = set(existing)
        return ["Division", *[f for f in reader.fields() if f in have and f != "Division"]]

    def rows(self, cur: Any, reader: RunReader, division: int) -> int:
        raise NotImplementedError

    def deletions(self, cur: Any, batches: Iterator[list[dict[str, Any]]], division: int) -> int:
        """Per key: ``DELETE ... WHERE Timestamp <= deletion's`` as ``executemany`` batches."""
        statement = self.dialect.delete(self.table)
        total = 0
        for batch in batches:
            _executemany(cur, statement, [(division, _deletion_key(d), int(d.get("Timestamp") or 0)) for d in batch])
            total += len(batch)
        return total

    def sweep(self, cur: Any, reader: RunReader, division: int) -> int:
        """After a complete snapshot (an entity without ``sync/`` is read whole each run): delete the division's
        rows whose key the snapshot no longer has. The snapshot's keys go to a temporary table first."""
        q, key = self.dialect.quote, self.table.key
        cur.execute(f"CREATE TEMPORARY TABLE {q(KEPT)} ({q('k')} VARCHAR(200))")
        for batch in reader.record_batches():
            keys = [str(r[key]) for r in batch if r.get(key) is not None]  # as this run just wrote them
            if len(keys) != len(batch):
                raise ExactOnlineConfigError(
                    f"A snapshot row of {self.table.name} has no {key}: the mirror cannot tell which rows were "
                    f"deleted. Export the key field (select '*' or a list with {key})."
                )
            self.stage_keys(cur, keys)
        t = q(self.table.name)
        key_type = self.dialect.column_type(self.column(key))
        cur.execute(
            f"DELETE FROM {t} WHERE {q('Division')} = {int(division)} AND NOT EXISTS (SELECT 1 FROM {q(KEPT)} s "
            f"WHERE CAST(s.{q('k')} AS {key_type}) = {t}.{q(key)})"
        )
        swept = max(0, int(cur.rowcount or 0))
        cur.execute(f"DROP TABLE {q(KEPT)}")
        return swept

    def stage_keys(self, cur: Any, keys: list[str]) -> None:
        p = self.dialect.placeholder
        _executemany(
            cur,
            f"INSERT INTO {self.dialect.quote(KEPT)} ({self.dialect.quote('k')}) VALUES ({p})",
            [(k,) for k in keys],
        )


class UpsertLoad(_Load):
    def rows(self, cur: Any, reader: RunReader, division: int) -> int:
        total = 0
        for batch in reader.record_batches():
            columns = self.run_columns(reader, self.ensure_columns(cur, reader.fields()))
            statement = self.dialect.upsert(self.table, columns)
            types = [self.by_name.get(c) for c in columns]
            rows = []
            for record in batch:
                values = [sql_value(record.get(c), t) for c, t in zip(columns, types, strict=True)]
                values[0] = division
                rows.append(tuple(values))
            _executemany(cur, statement, rows)
            total += len(batch)
            self.progress("rows", total)
        return total


class MergeLoad(_Load):
    """Standard SQL: stage with ``executemany``, then one ``MERGE``; deletions through a staged set."""

    def rows(self, cur: Any, reader: RunReader, division: int) -> int:
        q, p = self.dialect.quote, self.dialect.placeholder
        staged: list[str] = []
        total = 0
        for batch in reader.record_batches():
            columns = self.run_columns(reader, self.ensure_columns(cur, reader.fields()))
            if not staged:
                defs = ", ".join(f"{q(c)} {self.dialect.column_type(self.column(c))}" for c in columns)
                cur.execute(f"CREATE TEMPORARY TABLE {q(STAGE)} ({q('_seq')} BIGINT, {defs})")
                staged = list(columns)
            for name in columns:
                if name not in staged:
                    cur.execute(
                        f"ALTER TABLE {q(STAGE)} ADD COLUMN {q(name)} {self.dialect.column_type(self.column(name))}"
                    )
                    staged.append(name)
            types = [self.by_name.get(c) for c in columns]
            names = ", ".join(q(c) for c in ["_seq", *columns])
            statement = f"INSERT INTO {q(STAGE)} ({names}) VALUES ({', '.join([p] * (len(columns) + 1))})"
            rows = []
            for offset, record in enumerate(batch):
                values = [total + offset, *(sql_value(record.get(c), t) for c, t in zip(columns, types, strict=True))]
                values[1] = division
                rows.append(tuple(values))
            _executemany(cur, statement, rows)
            total += len(batch)
            self.progress("rows", total)
        if staged:
            cur.execute(self.merge_statement(staged))
            cur.execute(f"DROP TABLE {q(STAGE)}")
        return total

    def merge_statement(self, columns: list[str]) -> str:
        q, t, key = self.dialect.quote, self.dialect.quote(self.table.name), self.table.key
        names = ", ".join(q(c) for c in columns)
        order = f"{q('Timestamp')} DESC, " if "Timestamp" in columns else ""
        latest = (
            f"SELECT {names} FROM (SELECT {names}, ROW_NUMBER() OVER (PARTITION BY {q('Division')}, {q(key)} "
            f"ORDER BY {order}{q('_seq')} DESC) AS {q('_rank')} FROM {q(STAGE)}) ranked WHERE {q('_rank')} = 1"
        )
        on = f"t.{q('Division')} = s.{q('Division')} AND t.{q(key)} = s.{q(key)}"
        updates = ", ".join(f"{q(c)} = s.{q(c)}" for c in columns if c not in ("Division", key))
        guard = ""
        if "Timestamp" in columns:
            guard = f" AND (t.{q('Timestamp')} IS NULL OR s.{q('Timestamp')} >= t.{q('Timestamp')})"
        matched = f"WHEN MATCHED{guard} THEN UPDATE SET {updates} " if updates else ""
        return (
            f"MERGE INTO {t} t USING ({latest}) s ON ({on}) {matched}"
            f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({', '.join('s.' + q(c) for c in columns)})"
        )

    def deletions(self, cur: Any, batches: Iterator[list[dict[str, Any]]], division: int) -> int:
        q, p = self.dialect.quote, self.dialect.placeholder
        total = 0
        for batch in batches:
            if not total:
                cur.execute(f"CREATE TEMPORARY TABLE {q(DELETED)} ({q('k')} VARCHAR(200), {q('ts')} BIGINT)")
            rows = [(_deletion_key(d), int(d.get("Timestamp") or 0)) for d in batch]
            _executemany(cur, f"INSERT INTO {q(DELETED)} ({q('k')}, {q('ts')}) VALUES ({p}, {p})", rows)
            total += len(batch)
        if total:
            cur.execute(self.staged_delete(division))
            cur.execute(f"DROP TABLE {q(DELETED)}")
        return total

    def staged_delete(self, division: int) -> str:
        q, t = self.dialect.quote, self.dialect.quote(self.table.name)
        key_type = self.dialect.column_type(self.column(self.table.key))
        ts = f"{t}.{q('Timestamp')}"
        return (
            f"DELETE FROM {t} WHERE {q('Division')} = {int(division)} AND EXISTS (SELECT 1 FROM {q(DELETED)} d "
            f"WHERE CAST(d.{q('k')} AS {key_type}) = {t}.{q(self.table.key)} AND ({ts} IS NULL OR {ts} <= d.{q('ts')}))"
        )


class CopyLoad(MergeLoad):
    """PostgreSQL: COPY JSON documents into staging, then one ``INSERT ... SELECT ... ON CONFLICT``."""

    #: CSV with quote and delimiter bytes that JSON never contains raw: every line is one ``jsonb`` value.
    COPY_DOCS = f"COPY {STAGE} (doc) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"

    def rows(self, cur: Any, reader: RunReader, division: int) -> int:
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        cur.execute(f"CREATE TEMPORARY TABLE {STAGE} (seq BIGSERIAL, doc JSONB) ON COMMIT DROP")
        total = 0
        for data, count in reader.json_batches():
            _copy(cur, self.COPY_DOCS, data)
            total += count
            self.progress("rows", total)
        if not total:
            return 0
        columns = self.run_columns(reader, self.ensure_columns(cur, reader.fields()))
        cur.execute(f"CREATE TEMPORARY TABLE {STAGE_TYPE} ({self._stage_types(columns)}) ON COMMIT DROP")
        cur.execute(self.insert_statement(columns, division))
        return total

    def _stage_types(self, columns: list[str]) -> str:
        """The row type ``jsonb_populate_record`` fills: dates (``/Date(ms)/``) and integers as text."""
        q, defs = self.dialect.quote, []
        for name in columns:
            column = self.column(name)
            if column.edm_type == "Edm.DateTime" or self.dialect.integer(column):
                kind = "TEXT"
            else:
                kind = self.dialect.column_type(column)
            defs.append(f"{q(name)} {kind}")
        return ", ".join(defs)

    def _expression(self, name: str) -> str:
        q, column = self.dialect.quote, self.column(name)
        value = f"r.{q(name)}"
        if column.edm_type == "Edm.DateTime":
            epoch = rf"TIMESTAMP '1970-01-01' + substring({value} from '^/Date\((-?[0-9]+)')::bigint * INTERVAL '1 ms'"
            return f"CASE WHEN {value} LIKE '/Date(%' THEN {epoch} ELSE ({value}::timestamptz AT TIME ZONE 'UTC') END"
        if self.dialect.integer(column):  # 20000176.0 (Parquet) -> 20000176; a JSON boolean -> 1 / 0
            number = f"CASE {value} WHEN 'true' THEN 1 WHEN 'false' THEN 0 ELSE {value}::numeric END"
            return f"({number})::{self.dialect.column_type(column)}"
        return value

    def insert_statement(self, columns: list[str], division: int) -> str:
        q, t, key = self.dialect.quote, self.dialect.quote(self.table.name), self.table.key
        values = [str(int(division)), *(self._expression(c) for c in columns[1:])]
        ts = "(doc->>'Timestamp')::numeric DESC NULLS LAST, " if "Timestamp" in columns else ""
        doc_key = f"lower(doc->>'{key.replace(chr(39), chr(39) * 2)}')"
        latest = f"SELECT DISTINCT ON ({doc_key}) seq FROM {STAGE} ORDER BY {doc_key}, {ts}seq DESC"
        updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in columns if c not in ("Division", key))
        guard = ""
        if "Timestamp" in columns:
            guard = f" WHERE {t}.{q('Timestamp')} IS NULL OR excluded.{q('Timestamp')} >= {t}.{q('Timestamp')}"
        conflict = f"DO UPDATE SET {updates}{guard}" if updates else "DO NOTHING"
        return (
            f"INSERT INTO {t} ({', '.join(q(c) for c in columns)}) SELECT {', '.join(values)} FROM {STAGE} s "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{STAGE_TYPE}, s.doc) r WHERE s.seq IN ({latest}) "
            f"ON CONFLICT ({q('Division')}, {q(key)}) {conflict}"
        )

    def stage_keys(self, cur: Any, keys: list[str]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer).writerows((k,) for k in keys)
        _copy(cur, f"COPY {KEPT} (k) FROM STDIN WITH (FORMAT csv)", buffer.getvalue().encode())

    def deletions(self, cur: Any, batches: Iterator[list[dict[str, Any]]], division: int) -> int:
        total = 0
        for batch in batches:
            if not total:
                cur.execute(f"CREATE TEMPORARY TABLE {DELETED} (k TEXT, ts BIGINT) ON COMMIT DROP")
            buffer = io.StringIO()
            csv.writer(buffer).writerows((_deletion_key(d), int(d.get("Timestamp") or 0)) for d in batch)
            _copy(cur, f"COPY {DELETED} (k, ts) FROM STDIN WITH (FORMAT csv)", buffer.getvalue().encode())
            total += len(batch)
        if total:
            cur.execute(self.staged_delete(division))
        return total


_EPOCH = dt.datetime(1970, 1, 1)


def _timestamp(value: Any) -> Any:
    """``/Date(ms)/`` or an ISO string -> a naive UTC datetime (what a ``TIMESTAMP`` column holds)."""
    if isinstance(value, str):
        match = odata._DATE_RE.match(value)
        if match:
            return _EPOCH + dt.timedelta(milliseconds=int(match.group(1)))
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _integer(value: Any) -> Any:
    """A JSON boolean or a Parquet float (20000176.0) in an integer column -> an int."""
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    return value


class TypedCopyLoad(CopyLoad):
    """PostgreSQL through psycopg 3: the client types the rows and ``COPY``s them into a staging table
    ``LIKE`` the target (binary-cheap for the server: no JSON to parse), then one ``INSERT ... SELECT
    ... ON CONFLICT`` of the highest ``Timestamp`` per key. psycopg2 connections take :class:`CopyLoad`."""

    def rows(self, cur: Any, reader: RunReader, division: int) -> int:
        if not hasattr(cur, "copy") or hasattr(cur, "copy_expert"):
            return super().rows(cur, reader, division)
        from psycopg.types.json import JsonDumper

        for kind in (dict, list):  # nested values land in TEXT columns as JSON
            cur.adapters.register_dumper(kind, JsonDumper)
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        q, total = self.dialect.quote, 0
        staged: set[str] = set()
        columns: list[str] = []
        for batch in reader.record_batches():
            existing = self.ensure_columns(cur, reader.fields())
            columns = self.run_columns(reader, existing)
            if not staged:
                cur.execute(f"CREATE TEMPORARY TABLE {STAGE} (LIKE {q(self.table.name)}) ON COMMIT DROP")
                cur.execute(f"ALTER TABLE {STAGE} ADD COLUMN _seq BIGINT")
                staged = set(existing)
            for name in columns:  # a field that appeared in this batch (schema drift)
                if name not in staged:
                    cur.execute(
                        f"ALTER TABLE {STAGE} ADD COLUMN {q(name)} {self.dialect.column_type(self.column(name))}"
                    )
                    staged.add(name)
            convert: list[tuple[int, Callable[[Any], Any]]] = []
            for index, name in enumerate(columns[1:], start=1):
                function = self._converter(name)
                if function is not None:
                    convert.append((index, function))
            names = ", ".join(q(c) for c in columns)
            with cur.copy(f"COPY {STAGE} ({names}, _seq) FROM STDIN") as copy:
                for offset, record in enumerate(batch, start=total):
                    values = [record.get(c) for c in columns]
                    values[0] = division
                    for index, function in convert:
                        if values[index] is not None:
                            values[index] = function(values[index])
                    values.append(offset)
                    copy.write_row(values)
            total += len(batch)
            self.progress("rows", total)
        if total:
            cur.execute(self.typed_insert(columns))
        return total

    def _converter(self, name: str) -> Callable[[Any], Any] | None:
        column = self.column(name)
        if column.edm_type == "Edm.DateTime":
            return _timestamp
        return _integer if self.dialect.integer(column) else None

    def typed_insert(self, columns: list[str]) -> str:
        q, t, key = self.dialect.quote, self.dialect.quote(self.table.name), self.dialect.quote(self.table.key)
        names = ", ".join(q(c) for c in columns)
        ts = f"{q('Timestamp')} DESC NULLS LAST, " if "Timestamp" in columns else ""
        latest = f"SELECT DISTINCT ON ({key}) _seq FROM {STAGE} ORDER BY {key}, {ts}_seq DESC"
        updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in columns if c not in ("Division", self.table.key))
        guard = ""
        if "Timestamp" in columns:
            guard = f" WHERE {t}.{q('Timestamp')} IS NULL OR excluded.{q('Timestamp')} >= {t}.{q('Timestamp')}"
        conflict = f"DO UPDATE SET {updates}{guard}" if updates else "DO NOTHING"
        return (
            f"INSERT INTO {t} ({names}) SELECT {names} FROM {STAGE} WHERE _seq IN ({latest}) "
            f"ON CONFLICT ({q('Division')}, {key}) {conflict}"
        )


LOADS: dict[str, type[_Load]] = {"upsert": UpsertLoad, "merge": MergeLoad, "copy": TypedCopyLoad}
