"""Hourly incremental sync of five Exact Online entities, in every reachable division, to object storage.

* ``list_divisions`` asks Exact which divisions (companies) the connection can reach.
* ``sync`` is mapped over entity x division: each mapped task reads the entity's ``sync/``
  endpoint from its stored ``Timestamp`` watermark (the first run is a full load), plus the
  ``sync/Deleted`` rows of that entity, and writes JSON Lines under
  ``{base}/{service}/{Entity}/division={d}/{run_id}/`` with a ``_manifest.json`` written last.
  The watermark is committed only after the output is complete, so a killed or retried task
  never loses or duplicates a row. It is the Airflow Variable
  ``exactonline_watermark__exactonline_incremental_sync.sync__exactonline_default__{service}_{Entity}__{division}``
  (this DAG's and task's own: another export of the same entities keeps its own position).

Where the files go: the Airflow Variable ``exactonline_export_path`` (e.g. ``s3://bucket/exact``;
add ``path_conn_id="aws_default"`` for the object store's credentials), else
``[exactonline] export_path`` / ``AIRFLOW__EXACTONLINE__EXPORT_PATH``, else
``file://$AIRFLOW_HOME/exactonline-exports``.

Trigger a run with ``{"reset_watermark": true}`` to re-load everything once.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, AssetAlias, Param

from airflow_provider_exactonline.operators.exactonline import (
    ExactOnlineDivisionsOperator,
    ExactOnlineToObjectStorageOperator,
)

ENTITIES = [
    "crm/Accounts",
    "crm/Contacts",
    "salesinvoice/SalesInvoices",
    "financialtransaction/TransactionLines",
    "financial/GLAccounts",
]

with DAG(
    dag_id="exactonline_incremental_sync",
    description="Hourly incremental sync of Exact Online to object storage (with deletions)",
    schedule="@hourly",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,  # one run at a time per watermark
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    params={"reset_watermark": Param(False, type="boolean", description="Full reload through sync once")},
    tags=["exactonline", "example"],
) as dag:
    divisions = ExactOnlineDivisionsOperator(task_id="list_divisions", exactonline_conn_id="exactonline_default")

    ExactOnlineToObjectStorageOperator.partial(
        task_id="sync",
        exactonline_conn_id="exactonline_default",
        mode="incremental",
        format="jsonl",
        path="{{ var.value.get('exactonline_export_path', '') }}",
        reset_watermark="{{ params.reset_watermark }}",
        outlets=[AssetAlias("exactonline_incremental_sync")],
        max_active_tis_per_dag=4,  # Exact allows 60 calls per minute per division
    ).expand(entity=ENTITIES, divisions=divisions.output)
