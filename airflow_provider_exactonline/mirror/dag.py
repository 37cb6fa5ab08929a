"""``mirror_dag()``: a DAG that mirrors Exact Online entities of every division of ONE connection into SQL tables.

Per division one ``deletions`` task reads ``sync/Deleted`` once for every mirrored entity (``deletions.py``);
then one mapped task per (division, entity): an incremental export through ``sync/`` (the first run is a
full load from Timestamp 0), then the load of every not yet applied run, and of the division's deletion
runs, into the entity's table (see ``loader.py``). An entity without ``sync/`` is read whole each run (bulk/
or standard endpoint) and applied as a snapshot: rows it no longer has are deleted. Each table gets an Asset
``exactonline-mirror://{db_conn_id}/{table}`` through an AssetAlias, so downstream DAGs can be scheduled on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

ASSET_SCHEME = "exactonline-mirror"


def sync_entity_names() -> list[str]:
    """Every catalog entity with a ``sync/`` endpoint (``"all"`` in :func:`mirror_dag`), but ``sync/Deleted``."""
    from airflow_provider_exactonline import catalog
    from airflow_provider_exactonline.mirror.deletions import DELETED_ENTITY

    names = (s.qualified_name for s in catalog.all_entities() if s.has_variant("sync"))
    return sorted(n for n in names if n != DELETED_ENTITY)


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
    deletions_watermark_id: str | None = None,
    hook: Any = None,
    budget_task: str | None = None,
) -> dict[str, Any]:
    """Export one entity of one division incrementally, then apply its pending runs to the table.

    ``deletions_watermark_id``: the division's deletions come from the shared ``sync/Deleted`` runs of
    that export (:func:`mirror_deletions`), not from a read of this entity's own; None: its own read.
    ``budget_task``: plan the export against the day's quota under this name (``budget/planner.py``): it is
    rescheduled to after Exact's daily reset when what it cost last time no longer fits.
    """
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
    from airflow_provider_exactonline.mirror.deletions import deletions_dir
    from airflow_provider_exactonline.mirror.loader import MirrorLoader
    from airflow_provider_exactonline.mirror.schema import table_for
    from airflow_provider_exactonline.operators.base import to_storage_path
    from airflow_provider_exactonline.operators.export import DivisionExport, safe_run_name
    from airflow_provider_exactonline.operators.watermark import VariableWatermarkStore

    spec = resolve_entity(entity)
    hook = hook or ExactOnlineHook(exactonline_conn_id)
    calls_before = hook.api_calls
    base = to_storage_path(path)
    # An entity without sync/ is read whole every run (a snapshot); the loader deletes what it no longer has.
    incremental = spec.has_variant("sync")
    shared = deletions_watermark_id is not None and incremental
    job = DivisionExport(
        hook=hook,
        conn_id=exactonline_conn_id,
        spec=spec,
        entity=entity,
        mode="incremental" if incremental else "full",
        division=int(division),
        base=base,
        run_name=safe_run_name(run_id),
        run_id=run_id,
        try_number=try_number,
        include_deletes=incremental and not shared,
        watermark_store=watermark_store or VariableWatermarkStore(),
        watermark_id=watermark_id,
        log=log,
    )
    exported = within_budget(hook, budget_task, job.run, int(division))
    db_hook = DbApiHook.get_hook(db_conn_id)
    loader = MirrorLoader(db_hook, table_for(spec, table_prefix), log=log).for_entity_type(spec.deleted_entity_type)
    loaded = loader.apply_pending(
        job.final_dir.parent,
        int(division),
        export_id=watermark_id,
        deletions_dir=deletions_dir(base, int(division)) if shared else None,
        deletions_id=deletions_watermark_id,
    )
    calls = hook.api_calls - calls_before
    return {**loaded, "entity": entity, "exported_rows": exported.get("rows"), "api_calls": calls}


def mirror_deletions(
    *,
    exactonline_conn_id: str,
    division: int,
    entities: Sequence[str],
    path: str,
    run_id: str,
    try_number: int = 1,
    watermark_id: str,
    watermark_store: Any = None,
    log: Any = None,
    hook: Any = None,
    budget_task: str | None = None,
) -> dict[str, Any]:
    """Read ``sync/Deleted`` of one division once, split by the EntityTypes of ``entities``."""
    from airflow_provider_exactonline.catalog import resolve_entity
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook
    from airflow_provider_exactonline.mirror.deletions import DELETED_ENTITY, DeletionsExport, entity_types
    from airflow_provider_exactonline.operators.base import to_storage_path
    from airflow_provider_exactonline.operators.export import safe_run_name
    from airflow_provider_exactonline.operators.watermark import VariableWatermarkStore

    hook = hook or ExactOnlineHook(exactonline_conn_id)
    calls_before = hook.api_calls
    job = DeletionsExport(
        hook=hook,
        conn_id=exactonline_conn_id,
        spec=resolve_entity(DELETED_ENTITY),
        entity=DELETED_ENTITY,
        mode="incremental",
        division=int(division),
        base=to_storage_path(path),
        run_name=safe_run_name(run_id),
        run_id=run_id,
        try_number=try_number,
        watermark_store=watermark_store or VariableWatermarkStore(),
        watermark_id=watermark_id,
        log=log,
        keep_types=entity_types(entities),
    )
    return {**within_budget(hook, budget_task, job.run, int(division)), "api_calls": hook.api_calls - calls_before}


def within_budget(hook: Any, budget_task: str | None, work: Callable[[], dict[str, Any]], division: int) -> Any:
    if budget_task is None:
        return work()
    from airflow_provider_exactonline.budget.planner import run_within_budget

    return run_within_budget(hook, budget_task, work, division)


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

    :param entities: catalog names (``crm/Accounts``...) or ``"all"`` for every sync entity. An entity without
        a sync endpoint (``cashflow/Banks``...) is mirrored as a snapshot: read whole each run, which costs
        one call per 1,000 rows (bulk/) or per 60 (standard endpoint).
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

        @task(map_index_template="{{ task.op_kwargs['division'] }}")
        def deletions(division: int) -> dict[str, Any]:
            """One sync/Deleted read for every mirrored entity of the division."""
            context = get_current_context()
            ti = context["ti"]
            return mirror_deletions(
                exactonline_conn_id=exactonline_conn_id,
                division=int(division),
                entities=names,
                path=path or default_base_path(),
                run_id=str(context["run_id"]),
                try_number=int(getattr(ti, "try_number", 1) or 1),
                watermark_id=f"{dag_id}.deletions",
                log=ti.log if hasattr(ti, "log") else None,
                budget_task=f"{dag_id}.deletions.{division}",
            )

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
                table_prefix=table_prefix,
                log=ti.log if hasattr(ti, "log") else None,
                deletions_watermark_id=f"{dag_id}.deletions",
                budget_task=f"{dag_id}.mirror.{pair['division']}.{pair['entity']}",
            )
            label = entity_label(catalog.resolve_entity(pair["entity"]), pair["entity"])
            context["outlet_events"][alias].add(
                Asset(mirror_asset_uri(db_conn_id, table_name(label, table_prefix))), extra=result
            )
            return result

        deleted = deletions.expand(division=found.output)
        mapped = mirror.expand(pair=pairs(found.output))  # type: ignore[arg-type]
        deleted >> mapped
    return dag
