"""DAGs of tests/webhooks/test_webhooks_e2e.py: the mirror DAG factory scheduled on change Assets.

``exactonline_webhook_mirror`` mirrors crm/Accounts of division 1001 whenever its change Asset gets an
event (from the webhook receiver). Settings come from the test's environment.
"""

from __future__ import annotations

import os

from airflow_provider_exactonline.mirror.dag import mirror_dag
from airflow_provider_exactonline.webhooks.assets import change_asset

CONN_ID = os.environ.get("EXACTONLINE_E2E_CONN_ID", "exact_events")
DB_CONN_ID = os.environ.get("EXACTONLINE_E2E_DB_CONN_ID", "exact_events_db")
EXPORTS = os.environ.get("EXACTONLINE_E2E_EXPORTS", "file:///tmp/exactonline-events-exports")

webhook_mirror = mirror_dag(
    "exactonline_webhook_mirror",
    entities=["crm/Accounts"],
    db_conn_id=DB_CONN_ID,
    exactonline_conn_id=CONN_ID,
    divisions=[1001],
    path=f"{EXPORTS}/webhook",
    schedule=[change_asset(CONN_ID, 1001, "Accounts")],
)
