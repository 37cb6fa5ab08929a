"""One ``sync/Deleted`` read per division per run, for every entity the mirror keeps.

Without it each entity's export reads ``sync/Deleted?$filter=... and EntityType eq N`` itself: one
call (at least) per entity and division per run, 58 more per division for all 59 sync entities. A
:class:`DeletionsExport` reads ``sync/Deleted`` once, from its own watermark, and writes the rows
split by EntityType (``deleted-type{N}-00000.jsonl``; ``by_entity_type`` in the manifest), keeping
only the EntityTypes being mirrored. Each table's loader then reads only its own EntityType's parts.

Same protocol as an entity export (``operators/export.py``): parts into ``_tmp``, a directory move,
``_manifest.json`` last, the watermark only after that. Layout:
``{root}/sync/Deleted/division={d}/{run}__{watermark id}/``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_exactonline import __version__, odata
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.operators.export import DELETED_FIELDS, DivisionExport
from airflow_provider_exactonline.operators.watermark import Watermark
from airflow_provider_exactonline.operators.writers import EXTENSIONS, PartWriter, clean_record, open_writer

DELETED_ENTITY = "sync/Deleted"


def deletions_dir(base: Any, division: int) -> Any:
    """Where the shared deletion runs of ``division`` live (what the loaders read)."""
    return base / DELETED_ENTITY / f"division={int(division)}"


def entity_types(entities: Iterable[str]) -> list[int]:
    """The ``sync/Deleted`` EntityType codes of catalog entities (entities without one have no deletions)."""
    from airflow_provider_exactonline.catalog import resolve_entity

    codes = {resolve_entity(e).deleted_entity_type for e in entities}
    return sorted(int(c) for c in codes if c is not None)


@dataclass
class _TypeParts:
    """Rolling part files of one EntityType."""

    directory: Any
    code: int
    fmt: str
    rows_per_part: int
    parts: list[dict[str, Any]] = field(default_factory=list)
    writer: PartWriter | None = None

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        start = 0
        while start < len(records):
            if self.writer is None:
                name = f"deleted-type{self.code}-{len(self.parts):05d}.{EXTENSIONS[self.fmt]}"
                self.writer = open_writer(self.fmt, self.directory / name, list(DELETED_FIELDS), {})
                self.parts.append({"file": name, "rows": 0})
            chunk = records[start : start + self.rows_per_part - self.writer.rows]
            self.writer.write_page(chunk)
            start += len(chunk)
            if self.writer.rows >= self.rows_per_part:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.parts[-1]["rows"] = self.writer.rows
            self.writer = None


@dataclass
class DeletionsExport(DivisionExport):
    """``sync/Deleted`` of one division since its watermark, split by EntityType (see the module docstring)."""

    #: Keep only these EntityTypes (the mirrored entities'); None keeps every type.
    keep_types: Sequence[int] | None = None

    def run(self) -> dict[str, Any]:
        store = self.watermark_store
        if store is None:
            raise ExactOnlineConfigError("DeletionsExport needs a watermark store")
        stored = None if self.reset_watermark else store.get(self.watermark_key)
        manifest = self.read_manifest()
        if (
            manifest is not None
            and stored is not None
            and stored.run_id == self.run_id
            and manifest.get("watermark", {}).get("to") == stored.timestamp
        ):
            self._info("sync/Deleted of division %s was already exported by this run", self.division)
            return {**_summary(manifest), "skipped": True}
        self._clean_stale_tmp()
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        calls_before, started = self.hook.api_calls, dt.datetime.now(dt.timezone.utc)
        timezone = getattr(self.hook, "timezone", odata.DEFAULT_EXACT_TIMEZONE)
        wm_from = stored.timestamp if stored else 0
        keep = None if self.keep_types is None else {int(c) for c in self.keep_types}
        by_type: dict[int, _TypeParts] = {}
        max_ts, rows = wm_from, 0
        query = f"Timestamp gt {odata.long(wm_from)}"
        self._info("sync/Deleted of division %s, Timestamp > %s, EntityTypes %s", self.division, wm_from, keep or "all")
        try:
            for page in self.hook.iter_pages(
                DELETED_ENTITY, select=list(DELETED_FIELDS), filter=query, division=self.division
            ):
                groups: dict[int, list[dict[str, Any]]] = {}
                for record in page:
                    ts = record.get("Timestamp")
                    if ts is not None and int(ts) > max_ts:
                        max_ts = int(ts)
                    code = record.get("EntityType")
                    if code is None or (keep is not None and int(code) not in keep):
                        continue
                    cleaned = clean_record(record, convert_dates=self.convert_dates, timezone=timezone)
                    groups.setdefault(int(code), []).append(cleaned)
                for code, records in groups.items():
                    parts = by_type.get(code)
                    if parts is None:
                        parts = by_type[code] = _TypeParts(self.tmp_dir, code, self.fmt, self.rows_per_part)
                    parts.write(records)
                    rows += len(records)
        finally:
            for parts in by_type.values():
                parts.close()
        out = {
            "entity": DELETED_ENTITY,
            "kind": "deletions",
            "endpoint": DELETED_ENTITY,
            "mode": "incremental",
            "division": self.division,
            "run_id": self.run_id,
            "export_id": self.watermark_id,
            "try_number": self.try_number,
            "format": self.fmt,
            "rows": 0,
            "parts": [],
            "fields": [],
            "deletes": rows,
            "deleted_parts": [p for t in sorted(by_type) for p in by_type[t].parts],
            "by_entity_type": {str(t): by_type[t].parts for t in sorted(by_type)},
            "entity_types": None if keep is None else sorted(keep),
            "watermark": {"variable": self.watermark_key, "from": wm_from, "to": max_ts, "full_load": stored is None},
            "filter": query,
            "api_calls": self.hook.api_calls - calls_before,
            "started_at": started.isoformat(),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "provider_version": __version__,
        }
        self.finalize(out)
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        store.set(
            self.watermark_key,
            Watermark(timestamp=max_ts, run_id=self.run_id, committed_at=now, path=str(self.final_dir)),
        )
        self._info("Committed watermark %s = %s", self.watermark_key, max_ts)
        return _summary(out)


def _summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    wm = manifest.get("watermark") or {}
    types = manifest.get("by_entity_type") or {}
    return {
        "division": manifest.get("division"),
        "deletes": manifest.get("deletes"),
        "by_entity_type": {t: sum(p["rows"] for p in parts) for t, parts in types.items()},
        "watermark_from": wm.get("from"),
        "watermark_to": wm.get("to"),
        "api_calls": manifest.get("api_calls"),
    }
