"""``mirror_dag()``: a DAG that mirrors Exact Online entities of every division of ONE connection into SQL tables.

One mapped task per (division, entity): an incremental export through ``sync/`` (the first run is a full
load from Timestamp 0; deletions from ``sync/Deleted``), then the load of every not yet applied run into
the entity's table (see ``loader.py``). Each table gets an Asset ``exactonline-mirror://{db_conn_id}/{table}``
through an AssetAlias, so downstream DAGs can be scheduled on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

ASSET_SCHEME = "exactonline-mirror"


def sync_entity_names() -> list[str]:
    """Every catalog entity with a ``sync/`` endpoint (``"all"`` in :func:`mirror_dag`)."""
    from airflow_provider_exactonline import catalog

    return sorted(s.qualified_name for s in catalog.all_entities() if s.has_variant("sync"))


def mirror_asset_uri(db_conn_id: str, table: str) -> str:
    return f"{ASSET_SCHEME}://{db_conn_id}/{table}"


def mirror_one(
    *,
    exactonline_conn_id: str,
    db_conn_id: str,
    entity: str,
    division: int,
    path: str,
    run_id: str,
    try_number: int = 1,
    watermark_id: str,
    table_prefix: str = "",
    watermark_store: Any = None,
    log: Any = None,
) -> dict[str, Any]:
    """Export one entity of one division incrementally, then apply its pending runs to the table."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
    from airflow_provider_exactonline.mirror.loader import MirrorLoader
    from airflow_provider_exactonline.mirror.schema import table_for
    from airflow_provider_exactonline.operators.base import to_storage_path
    from airflow_provider_exactonline.operators.export import DivisionExport, safe_run_name
    from airflow_provider_exactonline.operators.watermark import VariableWatermarkStore

    spec = resolve_entity(entity)
    hook = ExactOnlineHook(exactonline_conn_id)
    job = DivisionExport(
        hook=hook,
        conn_id=exactonline_conn_id,
        spec=spec,
        entity=entity,
        mode="incremental",
        division=int(division),
        base=to_storage_path(path),
        run_name=safe_run_name(run_id),
        run_id=run_id,
        try_number=try_number,
        watermark_store=watermark_store or VariableWatermarkStore(),
        watermark_id=watermark_id,
        log=log,
    )
    exported = job.run()
    db_hook = DbApiHook.get_hook(db_conn_id)
    loader = MirrorLoader(db_hook, table_for(spec, table_prefix), log=log).for_entity_type(spec.deleted_entity_type)
    loaded = loader.apply_pending(job.final_dir.parent, int(division), export_id=watermark_id)
    return {**loaded, "entity": entity, "exported_rows": exported.get("rows"), "api_calls": hook.api_calls}


def mirror_dag(
    dag_id: str,
    *,
    entities: Sequence[str] | str = "all",
    db_conn_id: str,
    exactonline_conn_id: str = "exactonline_default",
    divisions: Any = "all",
    path: str | None = None,
    table_prefix: str = "",
    schedule: Any = "@hourly",
    start_date: dt.datetime | None = None,
    **dag_kwargs: Any,
) -> Any:
    """Build the mirror DAG.

    :param entities: catalog names (``crm/Accounts``...) or ``"all"`` for every sync entity.
    :param db_conn_id: a common-sql connection (PostgreSQL or SQLite) the tables live in.
    :param divisions: ``"all"`` (every division the connection reaches) or a list.
    :param path: where export runs are kept (default: ``[exactonline] export_path``).
    """
    from airflow.sdk import DAG, AssetAlias, get_current_context, task

    from airflow_provider_exactonline.operators.base import default_base_path
    from airflow_provider_exactonline.operators.divisions import ExactOnlineDivisionsOperator
    from airflow_provider_exactonline.operators.export import entity_label

    names = sync_entity_names() if entities == "all" else list(entities)
    alias = AssetAlias(f"exactonline-mirror-{dag_id}")
    with DAG(
        dag_id,
        schedule=schedule,
        start_date=start_date or dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,  # one writer per table and watermark
        **dag_kwargs,
    ) as dag:
        found = ExactOnlineDivisionsOperator(
            task_id="divisions", divisions=divisions, exactonline_conn_id=exactonline_conn_id
        )

        @task
        def pairs(division_list: list[int]) -> list[dict[str, Any]]:
            return [{"division": d, "entity": e} for d in division_list for e in names]

        @task(outlets=[alias], map_index_template="{{ task.op_kwargs['pair'] }}")
        def mirror(pair: dict[str, Any]) -> dict[str, Any]:
            from airflow.sdk import Asset

            from airflow_provider_exactonline import catalog
            from airflow_provider_exactonline.mirror.schema import table_name

            context = get_current_context()
            ti = context["ti"]
            result = mirror_one(
                exactonline_conn_id=exactonline_conn_id,
                db_conn_id=db_conn_id,
                entity=pair["entity"],
                division=int(pair["division"]),
                path=path or default_base_path(),
                run_id=str(context["run_id"]),
                try_number=int(getattr(ti, "try_number", 1) or 1),
                watermark_id=f"{dag_id}.mirror",
                log=ti.log if hasattr(ti, "log") else None,
            )
            label = entity_label(catalog.resolve_entity(pair["entity"]), pair["entity"])
            context["outlet_events"][alias].add(
                Asset(mirror_asset_uri(db_conn_id, table_name(label, table_prefix))), extra=result
            )
            return result

        mirror.expand(pair=pairs(found.output))  # type: ignore[arg-type]
    return dag
