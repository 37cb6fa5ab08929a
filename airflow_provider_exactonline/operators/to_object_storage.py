"""ExactOnlineToObjectStorageOperator: export entities to object storage (the engine is in ``export.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, ObjectStoragePath

from airflow_provider_exactonline.config import DEFAULT_CONN_ID
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError, ExactOnlineError
from airflow_provider_exactonline.operators.base import (
    _ExactOnlineBase,
    asset_uri,
    default_base_path,
    list_divisions,
    parse_divisions,
    resolve_spec,
    to_storage_path,
    try_number_of,
)
from airflow_provider_exactonline.operators.export import DivisionExport, entity_label, safe_run_name
from airflow_provider_exactonline.operators.watermark import (
    VariableWatermarkStore,
    WatermarkStore,
    default_watermark_id,
)
from airflow_provider_exactonline.operators.writers import check_format

if TYPE_CHECKING:
    from airflow.sdk import Context


class ExactOnlineToObjectStorageOperator(_ExactOnlineBase):
    """Export one entity of one or more divisions to object storage (JSON Lines, CSV or Parquet).

    Output, per division: ``{path}/{service}/{Entity}/division={d}/{run}/part-NNNNN.{ext}`` plus
    ``deleted-NNNNN.{ext}`` (incremental mode) and ``_manifest.json``, written last. See
    ``docs/operators.md``.

    :param entity: ``crm/Accounts``, ``Accounts``, ``SalesInvoices``... (templated).
    :param divisions: a division number, a list, ``"all"`` (every reachable division) or None for
        the connection's default division (templated; an XCom list works).
    :param path: export root, ``str`` or ``ObjectStoragePath`` (templated; default
        ``[exactonline] export_path`` or ``file://$AIRFLOW_HOME/exactonline-exports``).
    :param path_conn_id: connection for the object store (e.g. ``aws_default`` for ``s3://``).
    :param format: ``jsonl`` (default), ``csv`` or ``parquet`` (needs the ``parquet`` extra).
    :param mode: ``full``: the ``sync/`` endpoint from the start where Exact has one (its standard and bulk
        endpoints refuse unfiltered reads; the watermark is stored for the next incremental run), else
        ``bulk/``, else the standard one; with ``filter=``: ``bulk/`` or the standard one.
        ``incremental``: the ``sync/`` endpoint from the stored ``Timestamp`` watermark (a first
        run with no watermark is a full load through sync), plus ``sync/Deleted`` rows.
    :param select: fields to export (``"*"`` = all fields the catalog knows; templated).
    :param filter: ``$filter`` for full mode (templated).
    :param reset_watermark: ignore the stored watermark once (templated, e.g. from a DAG param).
    :param rows_per_part: rows per part file.
    :param convert_dates: write ``/Date(ms)/`` values as ISO 8601 (in the connection's time zone).
    :param watermark_store: where watermarks live (default: Airflow Variables, see ``watermark.py``).
    :param watermark_id: whose position this export keeps (templated; default ``{dag_id}.{task_id}``,
        so other exports of the same entity keep their own). Give two tasks the same id only to
        share one position on purpose.
    """

    template_fields: Sequence[str] = (
        "entity",
        "divisions",
        "path",
        "mode",
        "select",
        "filter",
        "reset_watermark",
        "run_name",
        "watermark_id",
    )
    ui_color = "#d7ecfb"

    def __init__(
        self,
        *,
        entity: str,
        divisions: Any = None,
        path: str | ObjectStoragePath | None = None,
        path_conn_id: str | None = None,
        format: str = "jsonl",
        mode: str = "full",
        select: str | list[str] | None = "*",
        filter: str | None = None,
        reset_watermark: bool | str = False,
        include_deletes: bool = True,
        deleted_entity_type: int | None = None,
        rows_per_part: int = 100_000,
        convert_dates: bool = False,
        run_name: str | None = None,
        watermark_store: WatermarkStore | None = None,
        watermark_id: str | None = None,
        exactonline_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        if "outlets" not in kwargs and isinstance(entity, str) and "{{" not in entity:
            kwargs["outlets"] = [Asset(asset_uri(exactonline_conn_id, self._label_or_raw(entity)))]
        super().__init__(exactonline_conn_id=exactonline_conn_id, **kwargs)
        self.entity = entity
        self.divisions = divisions
        self.path = path
        self.path_conn_id = path_conn_id
        self.format = check_format(format)
        if mode not in ("full", "incremental") and "{{" not in str(mode):
            raise ExactOnlineConfigError(f"mode={mode!r}: use 'full' or 'incremental'")
        self.mode = mode
        self.select = select
        self.filter = filter
        self.reset_watermark = reset_watermark
        self.include_deletes = include_deletes
        self.deleted_entity_type = deleted_entity_type
        if int(rows_per_part) < 1:
            raise ExactOnlineConfigError("rows_per_part must be at least 1")
        self.rows_per_part = int(rows_per_part)
        self.convert_dates = convert_dates
        self.run_name = run_name
        self.watermark_store = watermark_store
        self.watermark_id = watermark_id
        self._lineage: dict[str, Any] = {}

    @staticmethod
    def _label_or_raw(entity: str) -> str:
        try:
            return entity_label(resolve_spec(entity), entity)
        except ExactOnlineError:
            return entity.strip("/")

    def _divisions(self) -> list[int]:
        wanted = parse_divisions(self.divisions)
        if wanted == "all":
            found = list_divisions(self.hook)
            if not found:
                raise ExactOnlineConfigError(
                    f"Connection {self.exactonline_conn_id!r} reaches no divisions (system/Divisions is empty)"
                )
            return found
        if wanted is None:
            default = self.hook.division
            if default is None:
                raise ExactOnlineConfigError(
                    f"No divisions given and connection {self.exactonline_conn_id!r} has no default division; "
                    f"pass divisions=<number>, a list, or 'all'"
                )
            return [int(default)]
        assert isinstance(wanted, list)
        return wanted

    @staticmethod
    def _truthy(value: Any) -> bool:
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)

    def execute(self, context: Context) -> dict[str, Any]:
        entity = str(self.entity)
        mode = str(self.mode)
        if mode not in ("full", "incremental"):
            raise ExactOnlineConfigError(f"mode={mode!r}: use 'full' or 'incremental'")
        spec = resolve_spec(entity)
        label = entity_label(spec, entity)
        base = to_storage_path(self.path or default_base_path(), self.path_conn_id)
        run_id = str(context.get("run_id") or "manual")
        run_name = safe_run_name(self.run_name or run_id)
        hook = self.hook
        divisions = self._divisions()
        same_named = ("select", "filter", "rows_per_part", "convert_dates", "include_deletes", "deleted_entity_type")
        options = {name: getattr(self, name) for name in same_named}
        store = self.watermark_store or VariableWatermarkStore()
        watermark_id = str(self.watermark_id or default_watermark_id(self.dag_id, self.task_id))
        results = []
        for division in divisions:
            job = DivisionExport(
                hook=hook,
                conn_id=self.exactonline_conn_id,
                spec=spec,
                entity=entity,
                mode=mode,
                division=division,
                base=base,
                run_name=run_name,
                run_id=run_id,
                try_number=try_number_of(context),
                fmt=self.format,
                reset_watermark=self._truthy(self.reset_watermark),
                watermark_store=store,
                watermark_id=watermark_id,
                log=self.log,
                **options,
            )
            results.append(job.run())
        summary = {
            "entity": label,
            "mode": mode,
            "format": self.format,
            "base": str(base),
            "rows": sum(r.get("rows") or 0 for r in results),
            "deletes": sum(r.get("deletes") or 0 for r in results),
            "api_calls": hook.api_calls,
            "divisions": results,
        }
        self._lineage = {
            "base_url": hook.config.base_url,
            "label": label,
            "divisions": divisions,
            "outputs": [(r["path"], r.get("rows")) for r in results],
        }
        self._emit_asset_events(context, label, summary)
        return summary

    def _emit_asset_events(self, context: Context, label: str, summary: dict[str, Any]) -> None:
        extra = {
            "rows": summary["rows"],
            "deletes": summary["deletes"],
            "paths": [d["path"] for d in summary["divisions"]],
        }
        events = context.get("outlet_events")
        if events is None:
            return
        uri = asset_uri(self.exactonline_conn_id, label)
        for outlet in self.outlets or []:
            try:
                if isinstance(outlet, AssetAlias):
                    events[outlet].add(Asset(uri), extra=extra)
                elif isinstance(outlet, Asset) and outlet.uri == uri:
                    events[outlet].extra.update(extra)
            except Exception as err:  # asset events are a courtesy; never fail the export for them
                self.log.warning("Could not attach asset event extra for %s: %s", outlet, err)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Input: the Exact entity per division; outputs: the run directories. None without openlineage.

        Naming follows OpenLineage's conventions: ``exactonline://{api host}`` + ``{division}/{entity}``
        for Exact; ``file`` + absolute path for local output; ``{scheme}://{bucket}`` + key (no leading
        slash, no Airflow ``conn_id@``) for object stores.
        """
        try:
            from airflow.providers.common.compat.openlineage.facet import (
                Dataset,
                OutputDataset,
                OutputStatisticsOutputDatasetFacet,
            )
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        if not self._lineage:
            return None
        from urllib.parse import urlsplit

        host = urlsplit(self._lineage["base_url"]).netloc.rpartition("@")[2]
        inputs = [
            Dataset(namespace=f"exactonline://{host}", name=f"{d}/{self._lineage['label']}")
            for d in self._lineage["divisions"]
        ]
        outputs = []
        for path, rows in self._lineage["outputs"]:
            parts = urlsplit(str(path))
            bucket = parts.netloc.rpartition("@")[2]  # ObjectStoragePath keeps conn_id as userinfo
            if parts.scheme in ("", "file", "local"):
                namespace, name = "file", parts.path or str(path)
            else:
                namespace, name = f"{parts.scheme}://{bucket}", parts.path.lstrip("/")
            facets: dict[str, Any] = {}
            if rows is not None:
                facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(rowCount=rows)
            outputs.append(OutputDataset(namespace=namespace, name=name, outputFacets=facets))
        return OperatorLineage(inputs=inputs, outputs=outputs)
