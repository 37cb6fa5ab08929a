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
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.operators.rowpages import RowPage, as_page, clean_record, json_default

__all__ = [
    "FORMATS",
    "CsvWriter",
    "JsonLinesWriter",
    "ParquetWriter",
    "PartSet",
    "PartWriter",
    "clean_record",
    "open_writer",
]

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


#: Datetimes go through ``json_default`` (``isoformat()``), so output matches ``json.dumps`` in meaning.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def dump_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON (orjson)."""
    return orjson.dumps(value, default=json_default, option=_ORJSON_OPTIONS)


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

    def write_page(self, records: RowPage | Sequence[Mapping[str, Any]]) -> None:
        """Write one page: records (mappings), or a :mod:`~airflow_provider_exactonline.operators.rowpages` page."""
        page = as_page(records)
        if not len(page):
            return
        if self._file is None:
            self._file = self.target.open("wb")
            self._start(page)
        self._write(page)
        self.rows += len(page)

    def close(self) -> None:
        if self._file is None:
            # An empty part still exists so a reader sees every part the manifest lists.
            self._file = self.target.open("wb")
            self._start(as_page([]))
        self._finish()
        self._file.close()

    def _start(self, first_page: RowPage) -> None:
        if self.fields is None:
            self.fields = first_page.keys()

    def _write(self, page: RowPage) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Write any trailer (Parquet footer)."""


class JsonLinesWriter(PartWriter):
    def _write(self, page: RowPage) -> None:
        self._file.write(page.jsonl())  # one write per page


_CSV_SPECIAL = (",", '"', "\n", "\r")
_BOOL_CELLS = {True: "true", False: "false", None: ""}


class CsvWriter(PartWriter):
    """CSV with a header row; the columns are the export's fields (extra keys are kept at the end)."""

    def _start(self, first_page: RowPage) -> None:
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

    @classmethod
    def _column_cells(cls, values: list[Any]) -> list[str]:
        """A column's cells, as :meth:`_cell` writes them; plain strings, numbers and booleans a column at a time.

        A page has one column per field (144 for Accounts) and most hold only strings that need no
        quotes, numbers, booleans or None: those columns are converted by C loops (``map``, one scan
        of the column's text for characters that need quotes), not by a Python call per value.
        """
        kinds = set(map(type, values))
        kinds.discard(type(None))
        if not kinds:
            return [""] * len(values)
        if kinds == {str}:
            present = list(filter(None, values))  # neither None nor ""
            text = "\x00".join(present)
            if not any(c in text for c in _CSV_SPECIAL):
                return values if len(present) == len(values) else ["" if v is None else v or '""' for v in values]
        elif kinds <= {int, float}:
            return list(map(str, values)) if None not in values else ["" if v is None else str(v) for v in values]
        elif kinds == {bool}:
            return list(map(_BOOL_CELLS.__getitem__, values))
        return list(map(cls._cell, values))

    def _write(self, page: RowPage) -> None:
        if not self._columns:
            self._emit([[]] * len(page))
            return
        if not len(page):
            return
        columns = [self._column_cells(page.column(c)) for c in self._columns]
        self._file.write(("\n".join(map(",".join, zip(*columns, strict=True))) + "\n").encode("utf-8"))


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

    def _start(self, first_page: RowPage) -> None:
        super()._start(first_page)
        pa = self._pa
        import pyarrow.parquet as pq

        self._schema = pa.schema(
            [(name, self._arrow_type(name, first_page.column(name))) for name in self.fields or []]
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

    def _array(self, values: list[Any], arrow_type: Any) -> Any:
        """One column as an Arrow array. Arrow converts the whole column in one call where it infers
        exactly the column's type from the values (so no value needs :meth:`_coerce`); anything else
        (mixed types, dates, objects in a string column) is coerced value by value."""
        pa = self._pa
        if not pa.types.is_timestamp(arrow_type):
            try:
                inferred = pa.array(values)
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                inferred = None
            if inferred is not None:
                if inferred.type == arrow_type:
                    return inferred
                if pa.types.is_null(inferred.type):
                    return pa.nulls(len(values), arrow_type)
                if inferred.type == pa.int64() and arrow_type == pa.float64():
                    try:
                        return inferred.cast(arrow_type, safe=True)  # exact (below 2**53), as float() is
                    except pa.ArrowInvalid:
                        pass
        return pa.array([self._coerce(v, arrow_type) for v in values], type=arrow_type)

    def _write(self, page: RowPage) -> None:
        pa = self._pa
        arrays = [self._array(page.column(field.name), field.type) for field in self._schema]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))

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


@dataclass
class PartSet:
    """Rolling part files (``part-00000.jsonl``, ``part-00001.jsonl``...) under one directory."""

    directory: Any
    prefix: str
    fmt: str
    fields: list[str] | None
    types: dict[str, str | None]
    rows_per_part: int
    parts: list[dict[str, Any]] = field(default_factory=list)
    _writer: PartWriter | None = None
    rows: int = 0

    def _name(self, index: int) -> str:
        return f"{self.prefix}-{index:05d}.{EXTENSIONS[self.fmt]}"

    def write(self, records: RowPage | Sequence[Mapping[str, Any]]) -> None:
        records = as_page(records)
        start = 0
        while start < len(records):
            if self._writer is None:
                name = self._name(len(self.parts))
                self._writer = open_writer(self.fmt, self.directory / name, self.fields, self.types)
                self.parts.append({"file": name, "rows": 0})
            room = self.rows_per_part - self._writer.rows
            chunk = records[start : start + room]
            self._writer.write_page(chunk)
            start += len(chunk)
            if self.fields is None and self._writer.fields:
                self.fields = list(self._writer.fields)
            if self._writer.rows >= self.rows_per_part:
                self._close_current()
        self.rows += len(records)

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.parts[-1]["rows"] = self._writer.rows
            self._writer = None

    def close(self) -> None:
        self._close_current()
