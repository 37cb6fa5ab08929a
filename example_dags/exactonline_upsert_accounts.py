"""Push CRM-side customer records into Exact Online Accounts, matched on the account ``Code``.

``extract_crm_accounts`` stands in for a query against your CRM (CiviCRM, HubSpot, a database);
it returns plain dicts with Exact field names. ``upsert_accounts`` looks each ``Code`` up in Exact
(one batched ``$filter`` per 40 records), then updates changed fields (PUT), skips unchanged
records, and creates (POST) the missing ones. Rerunning it never creates a duplicate, even when
Exact's answer to a create got lost: the retry finds the record by its ``Code``. One rejected
record does not stop the others; the task fails at the end listing the rejected ones, and the
counts are in XCom (``return_value`` and ``upsert_report``).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

from airflow_provider_exactonline.operators.exactonline import ExactOnlineUpsertOperator

with DAG(
    dag_id="exactonline_upsert_accounts",
    description="Create or update Exact Online Accounts from CRM records",
    schedule="@daily",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=2)},
    tags=["exactonline", "example"],
) as dag:

    @task
    def extract_crm_accounts() -> list[dict]:
        """Replace with your CRM query. Keys must be Exact Accounts field names."""
        return [
            {
                "Code": "CRM0001",
                "Name": "Bakkerij de Vries",
                "Email": "info@bakkerijdevries.example",
                "City": "Utrecht",
                "Country": "NL",
            },
            {
                "Code": "CRM0002",
                "Name": "Fietsenmaker Jansen",
                "Email": "jan@fietsjansen.example",
                "City": "Gouda",
                "Country": "NL",
            },
            {
                "Code": "CRM0003",
                "Name": "Brasserie Dupont",
                "Email": "contact@dupont.example",
                "City": "Gent",
                "Country": "BE",
            },
        ]

    ExactOnlineUpsertOperator(
        task_id="upsert_accounts",
        exactonline_conn_id="exactonline_default",
        entity="crm/Accounts",
        key="Code",
        records=extract_crm_accounts(),
        division="{{ var.value.get('exactonline_division', '') }}",
    )
