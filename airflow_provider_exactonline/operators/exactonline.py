"""Operators for Exact Online: a generic call, an export to object storage, an upsert, and a divisions lister.

See ``docs/operators.md`` for the output layout, how deletions are applied downstream, and where
the incremental watermark lives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, BaseOperator, ObjectStoragePath

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.config import DEFAULT_CONN_ID
from airflow_provider_exactonline.exceptions import (
    ExactOnlineAuthError,
    ExactOnlineConfigError,
    ExactOnlineError,
    ExactOnlineOutcomeUnknown,
    ExactOnlineRateLimitExceeded,
    ExactOnlineServerError,
    ExactOnlineUpsertFailed,
)
from airflow_provider_exactonline.operators.export import DivisionExport, entity_label, safe_run_name
from airflow_provider_exactonline.operators.watermark import (
    VariableWatermarkStore,
    WatermarkStore,
    default_watermark_id,
)
from airflow_provider_exactonline.operators.writers import check_format, dumps

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

__all__ = [
    "ExactOnlineDivisionsOperator",
    "ExactOnlineOperator",
    "ExactOnlineToObjectStorageOperator",
    "ExactOnlineUpsertFailed",  # defined in exceptions.py; importable from here too
    "ExactOnlineUpsertOperator",
]

ASSET_SCHEME = "x-exactonline"
DEFAULT_EXPORT_DIRNAME = "exactonline-exports"


# ---------------------------------------------------------------------------------------------- helpers


def default_base_path() -> str:
    """Where exports go when no ``path`` is given.

    ``[exactonline] export_path`` in airflow.cfg (env ``AIRFLOW__EXACTONLINE__EXPORT_PATH``), else
    ``file://$AIRFLOW_HOME/exactonline-exports``.
    """
    try:
        from airflow.sdk.configuration import conf

        configured = conf.get("exactonline", "export_path", fallback=None)
    except Exception:
        configured = os.environ.get("AIRFLOW__EXACTONLINE__EXPORT_PATH")
    if configured:
        return str(configured)
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"file://{os.path.abspath(home)}/{DEFAULT_EXPORT_DIRNAME}"


def to_storage_path(path: str | ObjectStoragePath | os.PathLike[str], conn_id: str | None = None) -> ObjectStoragePath:
    """``str``/``PathLike`` -> ObjectStoragePath; a bare local path becomes ``file://``."""
    if isinstance(path, ObjectStoragePath):
        return path
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if "://" not in text:
        text = "file://" + os.path.abspath(os.path.expanduser(text))
    return ObjectStoragePath(text, conn_id=conn_id)


def resolve_spec(entity: str) -> Any:
    """The catalog entry for ``entity``, or None for a raw path (``/...``) the catalog lacks."""
    from airflow_provider_exactonline import catalog

    return catalog.resolve(entity).spec


def asset_uri(conn_id: str, entity: str) -> str:
    """``x-exactonline://{conn_id}/{service}/{Entity}`` (one Asset per entity and connection)."""
    return f"{ASSET_SCHEME}://{conn_id}/{entity.strip('/')}"


def parse_divisions(value: Any) -> list[int] | str | None:
    """``3`` / ``"3"`` / ``[1, 2]`` / ``"1,2"`` / ``"[1, 2]"`` / ``"all"`` / None -> list, ``"all"`` or None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "all":
            return "all"
        value = json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Iterable):
        raise ExactOnlineConfigError(f"divisions={value!r}: give a division number, a list of them, or 'all'")
    result: list[int] = []
    for item in value:
        if isinstance(item, Mapping):  # a system/Divisions record
            item = item.get("Code")
        try:
            number = int(str(item).strip())
        except ValueError:
            raise ExactOnlineConfigError(f"divisions: {item!r} is not a division number") from None
        if number <= 0:
            raise ExactOnlineConfigError(f"divisions: {item!r} is not a division number")
        if number not in result:
            result.append(number)
    return result


def list_divisions(hook: Any, *, include_blocked: bool = False) -> list[int]:
    """Division numbers (``Code``) the connection's user can reach, via ``system/Divisions``."""
    numbers: list[int] = []
    for record in hook.divisions():
        if not include_blocked and record.get("Blocked"):
            continue
        code = record.get("Code")
        if code is not None and int(code) not in numbers:
            numbers.append(int(code))
    return numbers


def parse_division(value: Any) -> int | None:
    """A templated ``division`` (``1001``, ``"1001"``, ``""``, None) -> int, or None for "the connection's"."""
    if value in (None, ""):
        return None
    return int(str(value))


def _try_number(context: Mapping[str, Any]) -> int:
    ti = context.get("ti") or context.get("task_instance")
    try:
        return int(getattr(ti, "try_number", 1) or 1)
    except (TypeError, ValueError):
        return 1


# ---------------------------------------------------------------------------------------------- base


class _ExactOnlineBase(BaseOperator):
    def __init__(
        self, *, exactonline_conn_id: str = DEFAULT_CONN_ID, hook_params: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.exactonline_conn_id = exactonline_conn_id
        self.hook_params = hook_params or {}

    @cached_property
    def hook(self) -> ExactOnlineHook:
        from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

        return ExactOnlineHook(self.exactonline_conn_id, **self.hook_params)


class _DivisionOperatorBase(_ExactOnlineBase):
    """An operator that calls one division: ``division`` (templated) or the connection's."""

    def __init__(self, *, division: int | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.division = division

    def _division(self) -> int | None:
        return parse_division(self.division)


# ---------------------------------------------------------------------------------------------- generic call


class ExactOnlineOperator(_DivisionOperatorBase):
    """Call any Exact Online endpoint.

    The answer's JSON (``d`` unwrapped) is returned to XCom when it is at most ``max_xcom_bytes``;
    a larger answer is written to ``output_path`` (default: under the export base, see
    :func:`default_base_path`) and the path is returned instead, as ``{"path": ..., "bytes": ...}``.

    :param method: HTTP method (templated).
    :param endpoint: ``crm/Accounts``, ``current/Me``, a catalog name, or a full URL (templated).
    :param query: query parameters such as ``{"$filter": "...", "$select": "..."}`` (templated; named
        ``query`` because ``params`` is Airflow's DAG-params argument of every operator).
    :param body: JSON body for POST/PUT (templated).
    :param division: division for the call (templated; default: the connection's).
    :param paginate: for GET, follow ``__next`` and return all rows as one list.
    """

    template_fields: Sequence[str] = ("method", "endpoint", "query", "body", "division", "output_path")
    template_fields_renderers = {"query": "json", "body": "json"}
    ui_color = "#e7f1fb"

    def __init__(
        self,
        *,
        endpoint: str,
        method: str = "GET",
        query: dict[str, Any] | str | None = None,
        body: Any = None,
        division: int | str | None = None,
        paginate: bool = False,
        max_xcom_bytes: int = 64 * 1024,
        output_path: str | ObjectStoragePath | None = None,
        output_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(division=division, **kwargs)
        self.endpoint = endpoint
        self.method = method
        self.query = query
        self.body = body
        self.paginate = paginate
        self.max_xcom_bytes = max_xcom_bytes
        self.output_path = output_path
        self.output_conn_id = output_conn_id

    def _path_for(self, context: Context) -> str:
        endpoint = str(self.endpoint)
        if endpoint.startswith(("http://", "https://", "/")):
            return endpoint
        try:
            from airflow_provider_exactonline import catalog

            spec, variant, _path = catalog.resolve(endpoint)
            if spec is not None:
                return spec.variant_path(variant)
        except ExactOnlineError:
            pass
        return endpoint

    def execute(self, context: Context) -> Any:
        from airflow_provider_exactonline.hooks.exactonline import IDEMPOTENT_METHODS

        method = str(self.method).upper()
        params: Any = self.query
        if isinstance(params, str) and params.strip().startswith("{"):
            params = json.loads(params)
        body = self.body
        if isinstance(body, str) and body.strip()[:1] in ("{", "["):
            body = json.loads(body)
        path = self._path_for(context)
        division = self._division()
        hook = self.hook
        if self.paginate and method == "GET":
            result: Any = []
            url: str | None = path
            page_params = params
            while url:
                d = hook.get(url, params=page_params, division=division)
                page_params = None
                if isinstance(d, dict) and isinstance(d.get("results"), list):
                    result.extend(d["results"])
                    url = d.get("__next") or None
                else:
                    result.extend(d if isinstance(d, list) else [d])
                    url = None
            return self._deliver(context, method, path, result)
        if method in IDEMPOTENT_METHODS:
            response = hook.request(method, path, params=params, json=body, division=division)
            return self._deliver(context, method, path, self._payload(response))
        # POST (and any other non-idempotent method): the hook never re-sends it once it may have
        # reached Exact, and neither may Airflow's task retries: such failures fail the task for good.
        again = f"Airflow does not retry this task: a retry would send the {method} again and could create a duplicate"
        try:
            response = hook.request(method, path, params=params, json=body, division=division)
        except ExactOnlineServerError as err:
            raise ExactOnlineOutcomeUnknown(
                f"{err} {again}. Check in Exact Online whether the {method} took effect before running the task again.",
                status_code=err.status_code,
                exact_message=err.exact_message,
                reason=err.reason,
                url=err.url,
            ) from err
        try:
            return self._deliver(context, method, path, self._payload(response))
        except Exception as err:
            raise ExactOnlineOutcomeUnknown(
                f"Exact Online accepted {method} {path} (HTTP {response.status_code}), but handling its answer "
                f"failed: {err}. {again}: the {method} took effect in Exact.",
                status_code=response.status_code,
            ) from err

    @staticmethod
    def _payload(response: Any) -> Any:
        if not response.content:
            return None
        payload = response.json()
        return payload.get("d", payload) if isinstance(payload, dict) else payload

    def _deliver(self, context: Context, method: str, path: str, result: Any) -> Any:
        """``result`` itself when small enough for XCom, else written to storage and its path."""
        self.log.info("Exact Online %s %s: %s API call(s)", method, path, self.hook.api_calls)
        encoded = dumps(result).encode("utf-8")
        if len(encoded) <= self.max_xcom_bytes:
            return result
        target = self._output_target(context)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp"
        with staging.open("wb") as fh:
            fh.write(encoded)
        staging.fs.mv(staging.path, target.path)
        self.log.info(
            "Answer is %d bytes (> max_xcom_bytes=%d); wrote it to %s", len(encoded), self.max_xcom_bytes, target
        )
        return {"path": str(target), "bytes": len(encoded), "rows": len(result) if isinstance(result, list) else None}

    def _output_target(self, context: Context) -> ObjectStoragePath:
        if self.output_path:
            return to_storage_path(self.output_path, self.output_conn_id)
        base = to_storage_path(default_base_path(), self.output_conn_id)
        ti = context.get("ti")
        map_index = getattr(ti, "map_index", -1)
        name = f"{self.task_id}" + (f"-{map_index}" if map_index not in (None, -1) else "") + ".json"
        return base / "_responses" / self.dag_id / safe_run_name(context.get("run_id") or "manual") / name


# ---------------------------------------------------------------------------------------------- divisions


class ExactOnlineDivisionsOperator(_ExactOnlineBase):
    """Return the division numbers the connection can reach, for ``.expand(division=...)``.

    :param divisions: ``"all"`` (default) or a fixed list to check against what the user can reach.
    :param include_blocked: also return divisions Exact marks as blocked.
    """

    template_fields: Sequence[str] = ("divisions",)

    def __init__(self, *, divisions: Any = "all", include_blocked: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.divisions = divisions
        self.include_blocked = include_blocked

    def execute(self, context: Context) -> list[int]:
        reachable = list_divisions(self.hook, include_blocked=self.include_blocked)
        wanted = parse_divisions(self.divisions)
        if wanted in (None, "all"):
            result = reachable
        else:
            assert isinstance(wanted, list)
            missing = [d for d in wanted if d not in reachable]
            if missing:
                raise ExactOnlineConfigError(
                    f"Division(s) {missing} are not reachable with connection {self.exactonline_conn_id!r}; "
                    f"reachable: {reachable}"
                )
            result = wanted
        self.log.info("Exact Online divisions: %s", result)
        return result


# ---------------------------------------------------------------------------------------------- export


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
    :param mode: ``full``: the ``bulk/`` endpoint where Exact has one, else the standard one.
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
                try_number=_try_number(context),
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


# ---------------------------------------------------------------------------------------------- upsert


def _norm_key(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    return value


def same_value(new: Any, old: Any) -> bool:
    """Does ``new`` (from the input) equal ``old`` (as Exact returns it)? Lenient on types and blanks."""
    if new in (None, "") and old in (None, ""):
        return True
    if new is None or old is None:
        return False
    if isinstance(old, str) and odata.is_date(old):
        try:
            import pendulum

            old_dt = odata.parse_date(old)
            new_dt: Any = odata.parse_date(new) if odata.is_date(new) else pendulum.parse(str(new))
            if old_dt is None or not isinstance(new_dt, pendulum.DateTime):
                return False
            return bool(old_dt.naive() == new_dt.naive())
        except Exception:
            return False
    if isinstance(old, bool) or isinstance(new, bool):
        truth = {"true": True, "1": True, "false": False, "0": False}
        n = truth.get(str(new).lower(), new) if isinstance(new, str) else new
        o = truth.get(str(old).lower(), old) if isinstance(old, str) else old
        return bool(n) == bool(o)
    if isinstance(old, (int, float)) or isinstance(new, (int, float)):
        try:
            return abs(float(new) - float(old)) < 1e-9
        except (TypeError, ValueError):
            return False
    return str(new).strip() == str(old).strip()


class ExactOnlineUpsertOperator(_DivisionOperatorBase):
    """Create or update records in an entity, matched on a key field, without ever creating a duplicate.

    For each batch of records: one lookup (``$filter`` = ``key eq a or key eq b ...``), then per
    record a PUT of the changed fields, nothing when unchanged, or a POST when no match. A POST is
    never re-sent (the hook guarantees it); when its answer is lost the record is reported failed
    with an unknown outcome, and a retry finds it by key and leaves or updates it.

    :param entity: the entity to write (``crm/Accounts``; templated).
    :param records: a list of dicts, a JSON string of one, or an XComArg (templated).
    :param records_path: instead of ``records``: a ``.json`` (list) or ``.jsonl`` file (templated).
    :param key: the field to match on, e.g. ``Code`` or ``Email`` (templated).
    :param trim_key: match with ``trim(key) eq ...`` (Exact pads account codes with spaces);
        default: on for ``Code``.
    :param fail_on_error: fail the task at the end when any record failed (default True); the
        report is in XCom under ``upsert_report`` either way.
    :param batch_size: records per lookup query (bounded also by URL length).
    """

    template_fields: Sequence[str] = ("entity", "records", "records_path", "key", "division")
    template_fields_renderers = {"records": "json"}
    ui_color = "#fbe9d7"
    MAX_FILTER_CHARS = 1500

    def __init__(
        self,
        *,
        entity: str,
        key: str,
        records: Any = None,
        records_path: str | ObjectStoragePath | None = None,
        records_conn_id: str | None = None,
        division: int | str | None = None,
        trim_key: bool | None = None,
        compare: bool = True,
        fail_on_error: bool = True,
        batch_size: int = 40,
        max_reported_failures: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(division=division, **kwargs)
        self.entity = entity
        self.key = key
        self.records = records
        self.records_path = records_path
        self.records_conn_id = records_conn_id
        self.trim_key = trim_key
        self.compare = compare
        self.fail_on_error = fail_on_error
        self.batch_size = max(1, int(batch_size))
        self.max_reported_failures = max_reported_failures

    # -- input

    def _load_records(self) -> list[dict[str, Any]]:
        if self.records is not None and self.records_path:
            raise ExactOnlineConfigError("give records or records_path, not both")
        data: Any = self.records
        if self.records_path:
            target = to_storage_path(self.records_path, self.records_conn_id)
            text = target.read_text()
            if str(target).endswith(".jsonl") or not text.lstrip().startswith("["):
                data = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                data = json.loads(text)
        if isinstance(data, str):
            data = json.loads(data) if data.strip() else []
        if data is None:
            raise ExactOnlineConfigError("no records: give records=[...] (or an XComArg) or records_path=")
        if isinstance(data, Mapping):
            data = [data]
        records = list(data)
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise ExactOnlineConfigError(f"record {i} is not an object: {str(record)[:80]!r}")
        return [dict(r) for r in records]

    # -- lookup

    def _key_expr(self) -> str:
        trim = self.trim_key if self.trim_key is not None else str(self.key) == "Code"
        return f"trim({self.key})" if trim else str(self.key)

    def _batches(self, records: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        length = 0
        for record in records:
            clause = len(self._key_expr()) + len(odata.literal(record.get(self.key))) + 8
            if batch and (len(batch) >= self.batch_size or length + clause > self.MAX_FILTER_CHARS):
                yield batch
                batch, length = [], 0
            batch.append(record)
            length += clause
        if batch:
            yield batch

    def _lookup(self, spec: Any, batch: list[dict[str, Any]], division: int | None) -> dict[Any, list[dict]]:
        key_expr = self._key_expr()
        values = []
        for record in batch:
            value = record[self.key]
            literal = odata.literal(value.strip() if isinstance(value, str) else value)
            if literal not in values:
                values.append(literal)
        flt = " or ".join(f"{key_expr} eq {v}" for v in values)
        id_field = (spec.key if spec is not None else None) or "ID"
        fields: dict[str, None] = {id_field: None, str(self.key): None}
        for record in batch:
            fields.update(dict.fromkeys(record))
        found: dict[Any, list[dict]] = {}
        for row in self.hook.iter_records(self._path(spec), select=list(fields), filter=flt, division=division):
            found.setdefault(_norm_key(row.get(self.key)), []).append(row)
        return found

    def _path(self, spec: Any) -> str:
        if spec is not None and spec.path:
            return str(spec.path)
        return str(self.entity)

    # -- run

    def execute(self, context: Context) -> dict[str, Any]:
        spec = resolve_spec(str(self.entity))
        if spec is not None and not spec.path:
            raise ExactOnlineConfigError(f"{spec.qualified_name} has no standard endpoint to write to")
        id_field = (spec.key if spec is not None else None) or "ID"
        division = self._division()
        records = self._load_records()
        report: dict[str, Any] = {
            "entity": entity_label(spec, str(self.entity)),
            "key": self.key,
            "total": len(records),
            "created": 0,
            "updated": 0,
            "unchanged": 0,
            "failed": 0,
            "failures": [],
        }

        def fail(record: Mapping[str, Any], error: Any, outcome: str = "rejected") -> None:
            report["failed"] += 1
            self.log.warning("Record %s=%r failed (%s): %s", self.key, record.get(self.key), outcome, error)
            if len(report["failures"]) < self.max_reported_failures:
                report["failures"].append({"key": record.get(self.key), "outcome": outcome, "error": str(error)[:500]})

        valid: list[dict[str, Any]] = []
        for record in records:
            if record.get(self.key) in (None, ""):
                fail(record, f"record has no {self.key!r} value to match on")
            else:
                valid.append(record)

        written: dict[Any, dict[str, Any]] = {}  # key -> record as it now is in Exact (this run)
        path = self._path(spec)
        for batch in self._batches(valid):
            found = self._lookup(spec, batch, division)
            for record in batch:
                norm = _norm_key(record[self.key])
                try:
                    existing = written.get(norm)
                    if existing is None:
                        matches = found.get(norm, [])
                        if len(matches) > 1:
                            fail(
                                record,
                                f"{len(matches)} records in Exact have {self.key} = "
                                f"{record[self.key]!r}; fix the duplicates in Exact first",
                                "ambiguous",
                            )
                            continue
                        existing = matches[0] if matches else None
                    if existing is None:
                        created = self.hook.create(path, record, division=division)
                        report["created"] += 1
                        written[norm] = {**record, **created}
                        continue
                    changed = {
                        k: v
                        for k, v in record.items()
                        if k not in (self.key, id_field) and (not self.compare or not same_value(v, existing.get(k)))
                    }
                    if not changed:
                        report["unchanged"] += 1
                        continue
                    self.hook.update(path, existing[id_field], changed, division=division)
                    report["updated"] += 1
                    written[norm] = {**existing, **changed}
                except (ExactOnlineRateLimitExceeded, ExactOnlineAuthError):
                    raise  # no point trying the other records; the retry resumes safely
                except ExactOnlineError as err:
                    # A lost answer or a 5xx may hide a write Exact did make; a 4xx surely did not.
                    unknown = err.status_code is None or err.status_code >= 500
                    fail(record, err, "unknown (the request may have reached Exact)" if unknown else "rejected")
        self.log.info(
            "Upsert into %s: %d created, %d updated, %d unchanged, %d failed (%d API calls)",
            report["entity"],
            report["created"],
            report["updated"],
            report["unchanged"],
            report["failed"],
            self.hook.api_calls,
        )
        report["api_calls"] = self.hook.api_calls
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key="upsert_report", value=report)
        if report["failed"] and self.fail_on_error:
            raise ExactOnlineUpsertFailed(
                f"{report['failed']} of {report['total']} record(s) could not be written to {report['entity']} "
                f"(the others were written): {report['failures'][:5]}. A retry is safe: records are matched on "
                f"{self.key} again, so nothing is created twice.",
                report,
            )
        return report
