"""Streaming record writers for exports: JSON Lines, CSV and Parquet, one part file at a time.

A writer is opened on one file (an ``ObjectStoragePath`` or anything with ``open("wb")``), takes
pages of records with :meth:`PartWriter.write_page` and is closed once; it never holds more than
one page in memory. Values are written as Exact sent them, except that ``__metadata`` and
deferred navigation properties (``{"__deferred": ...}``) are dropped, and, when the export asks
for it, ``/Date(ms)/`` strings become ISO 8601 timestamps. CSV keeps None and "" apart: None is an
empty field, "" a quoted empty string (``""``), as PostgreSQL's ``COPY ... CSV`` reads them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

FORMATS = ("jsonl", "csv", "parquet")
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}

#: Integer-valued fields Exact declares as "number"; kept as int64 in Parquet instead of float64.
INTEGER_FIELDS = frozenset({"Timestamp", "Division", "EntityType", "Status", "Type", "LineNumber"})
_EDM_INTEGERS = frozenset({"Edm.Byte", "Edm.SByte", "Edm.Int16", "Edm.Int32", "Edm.Int64"})


class _Openable(Protocol):
    def open(self, mode: str = ..., **kwargs: Any) -> Any: ...


def check_format(fmt: str) -> str:
    value = str(fmt).lower().strip().lstrip(".")
    if value in ("json", "ndjson"):
        value = "jsonl"
    if value not in FORMATS:
        raise ExactOnlineConfigError(f"format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")
    if value == "parquet":
        require_pyarrow()
    return value


def require_pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ExactOnlineConfigError(
            "format='parquet' needs pyarrow: pip install 'airflow-provider-exactonline[parquet]' "
            "(or use format='jsonl' / 'csv')"
        ) from err
    return pyarrow


def clean_record(record: Mapping[str, Any], *, convert_dates: bool, timezone: str) -> dict[str, Any]:
    """Drop OData plumbing; optionally turn ``/Date(ms)/`` into aware datetimes."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "__metadata":
            continue
        if isinstance(value, dict) and "__deferred" in value:
            continue
        if convert_dates and odata.is_date(value):
            value = odata.parse_date(value, timezone)
        out[key] = value
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


#: Datetimes go through ``_json_default`` (``isoformat()``), so output matches ``json.dumps`` in meaning.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def dump_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON (orjson)."""
    return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS)


def dumps(value: Any) -> str:
    return dump_bytes(value).decode("utf-8")


class PartWriter:
    """Write pages of records to one file. Subclasses implement the format."""

    def __init__(self, target: _Openable, fields: Sequence[str] | None = None) -> None:
        self.target = target
        self.fields = list(fields) if fields else None
        self.rows = 0
        self._file: Any = None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_page(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        if self._file is None:
            self._file = self.target.open("wb")
            self._start(records)
        self._write(records)
        self.rows += len(records)

    def close(self) -> None:
        if self._file is None:
            # An empty part still exists so a reader sees every part the manifest lists.
            self._file = self.target.open("wb")
            self._start([])
        self._finish()
        self._file.close()

    def _start(self, first_page: Sequence[Mapping[str, Any]]) -> None:
        if self.fields is None:
            seen: dict[str, None] = {}
            for record in first_page:
                seen.update(dict.fromkeys(record))
            self.fields = list(seen)

    def _write(self, records: Sequence[Mapping[str, Any]]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Write any trailer (Parquet footer)."""


class JsonLinesWriter(PartWriter):
    def _write(self, records: Sequence[Mapping[str, Any]]) -> None:
        self._file.write(b"".join(dump_bytes(dict(r)) + b"\n" for r in records))


_CSV_SPECIAL = (",", '"', "\n", "\r")


class CsvWriter(PartWriter):
    """CSV with a header row; the columns are the export's fields (extra keys are kept at the end)."""

    def _start(self, first_page: Sequence[Mapping[str, Any]]) -> None:
        super()._start(first_page)
        self._columns = list(self.fields or [])
        self._emit([[self._cell(c) for c in self._columns]])

    def _emit(self, rows: Iterable[Sequence[str]]) -> None:
        self._file.write("".join(",".join(row) + "\n" for row in rows).encode("utf-8"))

    @staticmethod
    def _cell(value: Any) -> str:
        """One field, quoted as ``csv.QUOTE_MINIMAL`` would, except that "" is quoted and None is not."""
        if value is None:
            return ""
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (dt.datetime, dt.date)):
            text = value.isoformat()
        elif isinstance(value, (dict, list)):
            text = dumps(value)
        else:
            text = str(value)
        if text == "" or any(c in text for c in _CSV_SPECIAL):
            return '"' + text.replace('"', '""') + '"'
        return text

    def _write(self, records: Sequence[Mapping[str, Any]]) -> None:
        self._emit([[self._cell(r.get(c)) for c in self._columns] for r in records])


class ParquetWriter(PartWriter):
    """Parquet with one row group per page; the schema is fixed from the catalog types and the first page."""

    def __init__(
        self, target: _Openable, fields: Sequence[str] | None = None, types: Mapping[str, str | None] | None = None
    ) -> None:
        super().__init__(target, fields)
        self.types = dict(types or {})
        self._pa = require_pyarrow()
        self._writer: Any = None

    def _arrow_type(self, name: str, sample: Iterable[Any]) -> Any:
        pa = self._pa
        values = [v for v in sample if v is not None]
        declared = self.types.get(name)
        if declared and declared.startswith("Edm."):  # the catalog's Edm type decides
            if declared in _EDM_INTEGERS:
                return pa.int64()
            if declared in ("Edm.Double", "Edm.Single", "Edm.Decimal"):
                return pa.float64()
            if declared == "Edm.Boolean":
                return pa.bool_()
            if declared == "Edm.DateTime" and any(isinstance(v, dt.datetime) for v in values):
                return pa.timestamp("ms", tz="UTC")
            return pa.string()
        if any(isinstance(v, dt.datetime) for v in values):
            return pa.timestamp("ms", tz="UTC")
        if declared == "boolean" or (values and all(isinstance(v, bool) for v in values)):
            return pa.bool_()
        if declared == "number" or (values and all(isinstance(v, (int, float)) for v in values)):
            if name in INTEGER_FIELDS or (values and all(isinstance(v, int) for v in values) and declared is None):
                return pa.int64()
            return pa.float64()
        return pa.string()

    def _start(self, first_page: Sequence[Mapping[str, Any]]) -> None:
        super()._start(first_page)
        pa = self._pa
        import pyarrow.parquet as pq

        self._schema = pa.schema(
            [(name, self._arrow_type(name, (r.get(name) for r in first_page))) for name in self.fields or []]
        )
        self._writer = pq.ParquetWriter(self._file, self._schema)

    def _coerce(self, value: Any, arrow_type: Any) -> Any:
        pa = self._pa
        if value is None:
            return None
        if arrow_type == pa.string():
            if isinstance(value, str):
                return value
            if isinstance(value, (dt.datetime, dt.date)):
                return value.isoformat()
            return dumps(value)
        if arrow_type == pa.int64():
            return int(value) if not isinstance(value, float) or value.is_integer() else round(value)
        if arrow_type == pa.float64():
            return float(value)
        if arrow_type == pa.bool_():
            return bool(value)
        if isinstance(value, str):
            return odata.parse_date(value) if odata.is_date(value) else dt.datetime.fromisoformat(value)
        return value

    def _write(self, records: Sequence[Mapping[str, Any]]) -> None:
        pa = self._pa
        columns = {field.name: [self._coerce(r.get(field.name), field.type) for r in records] for field in self._schema}
        self._writer.write_table(pa.Table.from_pydict(columns, schema=self._schema))

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()


def open_writer(
    fmt: str, target: _Openable, fields: Sequence[str] | None = None, types: Mapping[str, str | None] | None = None
) -> PartWriter:
    if fmt == "jsonl":
        return JsonLinesWriter(target, fields)
    if fmt == "csv":
        return CsvWriter(target, fields)
    if fmt == "parquet":
        return ParquetWriter(target, fields, types)
    raise ExactOnlineConfigError(f"format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")
