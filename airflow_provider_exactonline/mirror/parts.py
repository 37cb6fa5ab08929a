"""Read a finalized export run through its manifest in bounded batches, never the whole run in memory.

Rows come as lists of dicts (``record_batches``) or, for the PostgreSQL ``COPY`` path, as JSON Lines
bytes (``json_batches``): JSON Lines parts pass through as they are, CSV and Parquet rows are encoded
with orjson. Deletions are read per EntityType when the run is a shared ``sync/Deleted`` run
(``by_entity_type`` in its manifest, see ``deletions.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson

from airflow_provider_exactonline.operators.export import MANIFEST
from airflow_provider_exactonline.operators.writers import dump_bytes

#: Rows per batch: what one COPY chunk or one ``executemany`` carries.
BATCH_ROWS = 5000


def read_manifest(run_dir: Any) -> dict[str, Any]:
    return dict(json.loads((run_dir / MANIFEST).read_text()))


@dataclass
class RunReader:
    """The parts of one run directory, batch by batch."""

    run_dir: Any
    manifest: Mapping[str, Any]
    batch_rows: int = BATCH_ROWS
    #: Keys seen in the first record of each batch (the fields of a run are its ``$select``: all
    #: records carry the same keys, so one record per batch finds a field that appears later).
    seen_fields: dict[str, None] = field(default_factory=dict)

    @property
    def fmt(self) -> str:
        return str(self.manifest.get("format") or "jsonl")

    @property
    def row_parts(self) -> list[Mapping[str, Any]]:
        return list(self.manifest.get("parts") or [])

    def deleted_parts(self, entity_type: int | None) -> list[Mapping[str, Any]]:
        """The deletion parts that concern ``entity_type`` (all of them in a per-entity run)."""
        by_type = self.manifest.get("by_entity_type")
        if by_type is not None:  # a shared sync/Deleted run: only this entity's parts, none without a code
            return list(by_type.get(str(entity_type)) or []) if entity_type is not None else []
        return list(self.manifest.get("deleted_parts") or [])

    def fields(self) -> list[str]:
        names = dict.fromkeys(self.manifest.get("fields") or [])
        names.update(self.seen_fields)
        names.pop("__metadata", None)
        return list(names)

    def _note(self, record: Mapping[str, Any]) -> None:
        for name in record:
            if name not in self.seen_fields:
                self.seen_fields[name] = None

    # -- records

    def record_batches(self, parts: Sequence[Mapping[str, Any]] | None = None) -> Iterator[list[dict[str, Any]]]:
        for part in self.row_parts if parts is None else parts:
            target = self.run_dir / part["file"]
            for batch in _read_part(target, self.fmt, self.batch_rows):
                if batch:
                    if parts is None:
                        self._note(batch[0])
                    yield batch

    def deletion_batches(self, entity_type: int | None) -> Iterator[list[dict[str, Any]]]:
        wanted = entity_type
        for batch in self.record_batches(self.deleted_parts(entity_type)):
            if wanted is not None:
                batch = [r for r in batch if r.get("EntityType") in (None, "") or int(r["EntityType"]) == wanted]
            if batch:
                yield batch

    # -- JSON Lines bytes

    def json_batches(self) -> Iterator[tuple[bytes, int]]:
        """``(JSON Lines bytes, rows)`` per batch; JSON Lines parts are not decoded, only the first line of a batch."""
        if self.fmt != "jsonl":
            for batch in self.record_batches():
                yield b"".join(dump_bytes(r) + b"\n" for r in batch), len(batch)
            return
        for part in self.row_parts:
            with (self.run_dir / part["file"]).open("rb") as fh:
                while True:
                    lines = [line for line in islice(fh, self.batch_rows) if line.strip()]
                    if not lines:
                        break
                    self._note(orjson.loads(lines[0]))
                    if not lines[-1].endswith(b"\n"):
                        lines[-1] += b"\n"
                    yield b"".join(lines), len(lines)


def _read_part(target: Any, fmt: str, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    if fmt == "jsonl":
        with target.open("rb") as fh:
            while True:
                lines = list(islice(fh, batch_rows))
                if not lines:
                    return
                yield [orjson.loads(line) for line in lines if line.strip()]
    elif fmt == "csv":
        yield from _read_csv(target, batch_rows)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        with target.open("rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=batch_rows):
                yield batch.to_pylist()
    else:
        from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

        raise ExactOnlineConfigError(f"The SQL mirror cannot read export format {fmt!r}; use jsonl, csv or parquet")


def _read_csv(target: Any, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    """CSV parts as the writer wrote them: an unquoted empty cell is None, a quoted ``""`` an empty string.

    pyarrow's reader keeps the two apart; Python's ``csv`` module cannot (both read as ``""``), so without
    pyarrow an empty string loads as NULL (docs/mirror.md)."""
    import csv
    import io

    with target.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        return
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError:
        with target.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            while rows := [{k: (v if v != "" else None) for k, v in r.items()} for r in islice(reader, batch_rows)]:
                yield rows
        return
    options = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in header},  # values stay text; the loader converts them
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        null_values=[""],
    )
    with target.open("rb") as fh:
        reader = pa_csv.open_csv(
            fh, parse_options=pa_csv.ParseOptions(newlines_in_values=True), convert_options=options
        )
        for batch in reader:
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows).to_pylist()
