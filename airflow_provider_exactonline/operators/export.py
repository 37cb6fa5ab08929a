"""The export engine behind :class:`ExactOnlineToObjectStorageOperator` (no Airflow operator code here).

One call of :meth:`DivisionExport.run` exports one entity of one division:

1. Write pages, as they arrive, into part files under ``{entity}/division={d}/_tmp/{run}.try-{n}/``
   (constant memory: one page at a time).
2. Finalize: remove what an earlier try of this run left under the final name, move the temporary
   directory to ``{entity}/division={d}/{run}/`` and write ``_manifest.json`` last. A run directory
   without ``_manifest.json`` is never complete; readers must skip it.
3. Only then commit the watermark (incremental mode).

A try killed anywhere before step 3 leaves the watermark where it was, so the retry exports the
same rows again from the same watermark and replaces whatever the killed try left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_exactonline import __version__, odata
from airflow_provider_exactonline.exceptions import ExactOnlineCatalogError, ExactOnlineConfigError
from airflow_provider_exactonline.operators.rowpages import PageDecoder, RowPage, as_page, max_int
from airflow_provider_exactonline.operators.watermark import Watermark, WatermarkStore, watermark_key
from airflow_provider_exactonline.operators.writers import PartSet as _PartSet
from airflow_provider_exactonline.operators.writers import clean_record

MANIFEST = "_manifest.json"
TMP_DIR = "_tmp"
FULL_SYNC_FROM = 1  # a full export through sync/ reads Timestamp > 1: every row
DELETED_FIELDS = ("ID", "EntityKey", "EntityType", "Timestamp", "DeletedBy", "DeletedDate", "Division")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._=+-]+")


def safe_run_name(run_id: str) -> str:
    """``scheduled__2024-01-01T00:00:00+00:00`` -> ``scheduled__2024-01-01T00-00-00+00-00`` (no ``:`` or ``/``)."""
    name = _UNSAFE_RUN.sub("-", str(run_id).replace(":", "-")).strip(".-")
    if not name:
        raise ExactOnlineConfigError(f"run name {run_id!r} has no usable characters")
    return name


def _get(spec: Any, name: str, default: Any = None) -> Any:
    return getattr(spec, name, default)


def entity_label(spec: Any, entity: str) -> str:
    """The path segment an entity is exported under: ``crm/Accounts``."""
    if spec is None:
        return entity.strip("/")
    qualified = _get(spec, "qualified_name")
    if qualified:
        return str(qualified)
    path = _get(spec, "path")
    if path:
        return str(path)
    service, name = _get(spec, "service"), _get(spec, "name")
    return f"{service}/{name}" if service else str(name)


def choose_variant(spec: Any, mode: str, entity: str, *, filtered: bool = False) -> tuple[str, str]:
    """``(variant, API path)`` for an export mode: the catalog's ``spec.variant_for(mode)`` (full -> sync,
    else bulk, else standard; incremental -> sync).

    ``filtered``: a full export with the user's own ``$filter`` cannot read sync/ (it filters on Timestamp
    only), so it reads bulk/ or the standard endpoint, where the hook checks Exact's mandatory filtering.
    """
    if spec is None:
        # A raw path the catalog lacks: the caller said exactly what to call.
        raw = entity.strip("/")
        if mode == "incremental" and not raw.lower().startswith("sync/"):
            raise ExactOnlineCatalogError(
                f"{entity!r} is not in the catalog, so its sync endpoint is unknown; give the sync path "
                f"(e.g. 'sync/CRM/Accounts') for mode='incremental', or use mode='full'"
            )
        return (
            "sync" if raw.lower().startswith("sync/") else "bulk" if raw.lower().startswith("bulk/") else "standard"
        ), raw
    variant_for = _get(spec, "variant_for")
    if mode == "full" and filtered and (_get(spec, "bulk_path") or _get(spec, "path")):
        variant = "bulk" if _get(spec, "bulk_path") else "standard"
    elif callable(variant_for):
        variant = variant_for(mode)
    elif mode == "incremental":
        if not _get(spec, "sync_path"):
            alternative = "bulk" if _get(spec, "bulk_path") else "standard"
            raise ExactOnlineCatalogError(
                f"{_get(spec, 'name')} has no sync/ endpoint in Exact Online, so mode='incremental' is not "
                f"possible; use mode='full' (it reads the {alternative} endpoint)"
            )
        variant = "sync"
    else:
        variant = "bulk" if _get(spec, "bulk_path") else "standard"
    path = {"sync": _get(spec, "sync_path"), "bulk": _get(spec, "bulk_path"), "standard": _get(spec, "path")}.get(
        variant
    )
    if not path:
        raise ExactOnlineCatalogError(
            f"{_get(spec, 'name')} has no {variant} endpoint in Exact Online; mode={mode!r} cannot export it"
        )
    return variant, str(path)


def select_fields(spec: Any, variant: str, select: str | Sequence[str] | None) -> list[str] | None:
    """The export's field list (``"*"``/None = every field the catalog knows for the variant)."""
    if isinstance(select, str):
        fields = [f.strip() for f in select.split(",") if f.strip()]
    else:
        fields = list(select) if select else ["*"]
    if "*" in fields:
        if spec is None:
            return None
        # The catalog leaves out navigation collections (e.g. Accounts.BankAccounts): links, not data.
        fields = spec.expand_select("*", variant)
        if not fields:
            return None
    if variant == "sync" and "Timestamp" not in fields:
        fields.append("Timestamp")
    return fields


def may_link(spec: Any, variant: str, fields: list[str] | None) -> bool:
    """Whether Exact may answer with deferred navigation links (``{"__deferred": …}``): it writes them only
    for navigation properties, which it sends when the query has no ``$select`` or selects one."""
    navigation = getattr(spec, "navigation_fields", None)
    if fields is None or not callable(navigation):
        return True
    return not set(fields).isdisjoint(navigation(variant))


def field_types(spec: Any, variant: str) -> dict[str, str | None]:
    if spec is None:
        return {}
    field_info = getattr(spec, "field_info", None)
    if callable(field_info):  # Edm types ("Edm.Int32"...), so Parquet keeps integers as integers
        try:
            return {name: getattr(info, "edm_type", None) for name, info in field_info(variant).items()}
        except Exception:
            pass
    try:
        types = spec.fields_for(variant)
    except Exception:
        return {}
    return dict(types or {})


@dataclass
class DivisionExport:
    """Export one entity of one division (see the module docstring)."""

    hook: Any
    conn_id: str
    spec: Any
    entity: str
    mode: str
    division: int
    base: Any  # ObjectStoragePath of the export root
    run_name: str
    run_id: str
    try_number: int
    fmt: str = "jsonl"
    select: str | Sequence[str] | None = "*"
    filter: str | None = None
    rows_per_part: int = 100_000
    convert_dates: bool = False
    include_deletes: bool = True
    deleted_entity_type: int | None = None
    reset_watermark: bool = False
    watermark_store: WatermarkStore | None = None
    #: Which export's position this is (default ``{dag_id}.{task_id}``; see ``watermark.py``).
    watermark_id: str = ""
    stale_tmp_seconds: float | None = 2 * 86400
    log: Any = None

    # ------------------------------------------------------------------ layout

    @property
    def label(self) -> str:
        return entity_label(self.spec, self.entity)

    @property
    def division_dir(self) -> Any:
        return self.base / self.label / f"division={self.division}"

    @property
    def run_dir_name(self) -> str:
        """``{run}__{watermark id}``: two exports (DAGs, tasks) of one entity never share a directory."""
        return f"{self.run_name}__{safe_run_name(self.watermark_id)}" if self.watermark_id else self.run_name

    @property
    def final_dir(self) -> Any:
        return self.division_dir / self.run_dir_name

    @property
    def tmp_dir(self) -> Any:
        return self.division_dir / TMP_DIR / f"{self.run_dir_name}.try-{self.try_number}"

    @property
    def watermark_key(self) -> str:
        return watermark_key(self.conn_id, self.label, self.division, self.watermark_id)

    def _info(self, msg: str, *args: Any) -> None:
        if self.log is not None:
            self.log.info(msg, *args)

    # ------------------------------------------------------------------ steps

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.final_dir / MANIFEST
        try:
            if not path.exists():
                return None
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _remove(self, path: Any) -> None:
        try:
            if path.exists():
                path.fs.rm(path.path, recursive=True)
        except FileNotFoundError:
            pass

    def _clean_stale_tmp(self) -> None:
        """Remove what killed tries of this run left in ``_tmp`` (never other runs' work)."""
        tmp_root = self.division_dir / TMP_DIR
        if not tmp_root.exists():
            return
        now = time.time()
        for child in tmp_root.iterdir():
            if child.name.startswith(f"{self.run_dir_name}.try-"):
                self._info("Removing %s left by an earlier try of this run", child)
                self._remove(child)
            elif self.stale_tmp_seconds is not None and _age(child, now) > self.stale_tmp_seconds:
                self._info("Removing %s, a killed try of another run that was never retried", child)
                self._remove(child)

    def run(self) -> dict[str, Any]:
        variant, api_path = choose_variant(self.spec, self.mode, self.entity, filtered=bool(self.filter))
        store = self.watermark_store
        incremental = self.mode == "incremental"
        # A full export through sync/ reads from the start and yields the watermark the next incremental
        # run starts from, so nothing is read twice.
        full_sync = not incremental and variant == "sync"
        stored: Watermark | None = None
        if incremental:
            if store is None:
                raise ExactOnlineConfigError("mode='incremental' needs a watermark store")
            if self.reset_watermark:
                self._info("reset_watermark=True: ignoring and replacing watermark %s", self.watermark_key)
            else:
                stored = store.get(self.watermark_key)
            # An earlier try of this very run already finished and committed this division:
            # keep its output (exporting again from the moved watermark would replace it with less).
            manifest = self.read_manifest()
            if (
                manifest is not None
                and stored is not None
                and stored.run_id == self.run_id
                and manifest.get("watermark", {}).get("to") == stored.timestamp
            ):
                self._info(
                    "Division %s of %s was already exported and committed by this run", self.division, self.label
                )
                return {**_summary_of(manifest, path=str(self.final_dir)), "skipped": True}

        self._clean_stale_tmp()
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        calls_before = self.hook.api_calls
        started = dt.datetime.now(dt.timezone.utc)
        fields = select_fields(self.spec, variant, self.select)
        types = field_types(self.spec, variant)
        timezone = getattr(self.hook, "timezone", odata.DEFAULT_EXACT_TIMEZONE)

        wm_from = stored.timestamp if stored else 0
        del_from = stored.deleted_timestamp if stored and stored.deleted_timestamp is not None else wm_from
        if incremental:
            if self.filter:
                raise ExactOnlineConfigError(
                    "filter= is not supported with mode='incremental': Exact's sync endpoints filter on "
                    "Timestamp only (the export adds that itself); use mode='full' to filter"
                )
            query_filter: str | None = f"Timestamp gt {odata.long(wm_from)}"
            self._info(
                "Incremental export of %s division %s from %s Timestamp > %s%s",
                self.label,
                self.division,
                api_path,
                wm_from,
                "" if stored else " (no watermark yet: full load)",
            )
        elif full_sync:
            query_filter = f"Timestamp gt {odata.long(FULL_SYNC_FROM)}"
            self._info("Full export of %s division %s from %s (every row)", self.label, self.division, api_path)
        else:
            query_filter = self.filter or None
            self._info("Full export of %s division %s from %s", self.label, self.division, api_path)

        parts = _PartSet(self.tmp_dir, "part", self.fmt, fields, types, self.rows_per_part)
        max_ts = wm_from
        try:
            for page in self._pages(api_path, fields, query_filter, timezone, may_link(self.spec, variant, fields)):
                if incremental or full_sync:
                    max_ts = max_int(page, "Timestamp", max_ts)
                parts.write(page)
        finally:
            parts.close()

        deletes: _PartSet | None = None
        del_to = del_from
        entity_type = self.deleted_entity_type
        if entity_type is None and self.spec is not None:
            entity_type = _get(self.spec, "deleted_entity_type")
        if incremental and self.include_deletes and entity_type is not None:
            deletes = _PartSet(self.tmp_dir, "deleted", self.fmt, list(DELETED_FIELDS), {}, self.rows_per_part)
            deleted_filter = f"Timestamp gt {odata.long(del_from)} and EntityType eq {int(entity_type)}"
            try:
                for page in self.hook.iter_pages(
                    "sync/Deleted", select=list(DELETED_FIELDS), filter=deleted_filter, division=self.division
                ):
                    for record in page:
                        ts = record.get("Timestamp")
                        if ts is not None and int(ts) > del_to:
                            del_to = int(ts)
                    deletes.write([clean_record(r, convert_dates=self.convert_dates, timezone=timezone) for r in page])
            finally:
                deletes.close()

        manifest = {
            "entity": self.label,
            "endpoint": api_path,
            "variant": variant,
            "mode": self.mode,
            "division": self.division,
            "run_id": self.run_id,
            "export_id": self.watermark_id,
            "try_number": self.try_number,
            "format": self.fmt,
            "rows": parts.rows,
            "parts": parts.parts,
            "deletes": deletes.rows if deletes is not None else None,
            "deleted_parts": deletes.parts if deletes is not None else [],
            "deleted_entity_type": entity_type if incremental else None,
            "watermark": {
                "variable": self.watermark_key if incremental else None,
                "from": wm_from if incremental else None,
                "to": max_ts if incremental or full_sync else None,
                "deleted_from": del_from if deletes is not None else None,
                "deleted_to": del_to if deletes is not None else None,
                "full_load": incremental and stored is None,
            },
            "fields": parts.fields or fields or [],
            "filter": query_filter,
            # Every row of the division as of this read: the mirror deletes what a snapshot no longer has.
            "snapshot": not incremental and (full_sync or not self.filter),
            "api_calls": self.hook.api_calls - calls_before,
            "started_at": started.isoformat(),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "provider_version": __version__,
        }
        self.finalize(manifest)
        if (incremental or full_sync) and store is not None:
            store.set(
                self.watermark_key,
                Watermark(
                    timestamp=max_ts,
                    deleted_timestamp=del_to if deletes is not None else (stored.deleted_timestamp if stored else None),
                    run_id=self.run_id,
                    committed_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                    path=str(self.final_dir),
                ),
            )
            self._info("Committed watermark %s = %s (deletes %s)", self.watermark_key, max_ts, del_to)
        return _summary_of(manifest, path=str(self.final_dir))

    def _pages(
        self, api_path: str, fields: list[str] | None, query_filter: str | None, timezone: str, links: bool
    ) -> Iterator[RowPage]:
        """The entity's pages, cleaned (``__metadata`` and deferred links dropped), one at a time.

        A real hook decodes them into compact rows (:mod:`~airflow_provider_exactonline.operators.rowpages`);
        a hook without ``iter_decoded_pages`` gives dicts, cleaned here. ``links``: see :func:`may_link`."""
        options: dict[str, Any] = {"select": fields, "filter": query_filter, "division": self.division}
        if hasattr(self.hook, "iter_decoded_pages"):
            text = self.fmt == "jsonl"
            decoder = PageDecoder(convert_dates=self.convert_dates, timezone=timezone, text=text, links=links)
            yield from self.hook.iter_decoded_pages(api_path, decoder, **options)
            return
        for page in self.hook.iter_pages(api_path, **options):
            yield as_page([clean_record(r, convert_dates=self.convert_dates, timezone=timezone) for r in page])

    def finalize(self, manifest: dict[str, Any]) -> None:
        """Make the output visible under its final name: parts first, ``_manifest.json`` last."""
        final = self.final_dir
        self._remove(final)
        files = list(self.tmp_dir.iterdir()) if self.tmp_dir.exists() else []
        if files:
            final.parent.mkdir(parents=True, exist_ok=True)
            # Local file systems: one atomic directory rename. Object stores: copy + delete per key,
            # which is why the manifest (written after) is the completion marker.
            self.tmp_dir.fs.mv(self.tmp_dir.path, final.path, recursive=True)
        else:
            self._remove(self.tmp_dir)
        final.mkdir(parents=True, exist_ok=True)
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
        target = final / MANIFEST
        if final.protocol in ("file", "local", ""):
            staging = final / f".{MANIFEST}.tmp"
            staging.write_text(text)
            final.fs.mv(staging.path, target.path)
        else:
            target.write_text(text)  # a single PUT: atomic on object stores
        self._info("Wrote %s rows (%s parts) to %s", manifest["rows"], len(manifest["parts"]), final)


def _age(path: Any, now: float) -> float:
    """Seconds since ``path`` (a file or directory) was last modified; 0 when the store cannot say."""
    try:
        info = path.fs.info(path.path)
        mtime = info.get("mtime") or info.get("LastModified") or info.get("updated")
        if isinstance(mtime, dt.datetime):
            mtime = mtime.timestamp()
        return now - float(mtime) if mtime else 0.0
    except Exception:
        return 0.0


def _summary_of(manifest: Mapping[str, Any], path: str | None = None) -> dict[str, Any]:
    wm = manifest.get("watermark") or {}
    return {
        "division": manifest.get("division"),
        "path": path or manifest.get("path"),
        "rows": manifest.get("rows"),
        "deletes": manifest.get("deletes"),
        "parts": len(manifest.get("parts") or []),
        "watermark_from": wm.get("from"),
        "watermark_to": wm.get("to"),
        "api_calls": manifest.get("api_calls"),
        "endpoint": manifest.get("endpoint"),
    }


def iter_output_records(run_dir: Any, kind: str = "part") -> Iterator[dict[str, Any]]:
    """Read back a finalized run directory's records (``kind`` ``part`` or ``deleted``); for tests and merges."""
    manifest = json.loads((run_dir / MANIFEST).read_text())
    listing = manifest["parts"] if kind == "part" else manifest["deleted_parts"]
    fmt = manifest["format"]
    for part in listing:
        target = run_dir / part["file"]
        if fmt == "jsonl":
            with target.open("r") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)
        elif fmt == "csv":
            import csv

            with target.open("r") as fh:
                yield from csv.DictReader(fh)
        else:
            import pyarrow.parquet as pq

            with target.open("rb") as fh:
                yield from pq.read_table(fh).to_pylist()
