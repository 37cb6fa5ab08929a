"""DAGs of tests/webhooks/test_webhooks_e2e.py: the mirror DAG factory scheduled on change Assets.

``exactonline_webhook_mirror`` mirrors crm/Accounts of division 1001 whenever its change Asset gets an
event (from the webhook receiver); ``exactonline_change_mirror`` mirrors crm/Contacts whenever the change
trigger (an AssetWatcher in the triggerer) sees a change. Settings come from the test's environment.
"""

from __future__ import annotations

import os

from airflow.sdk import AssetWatcher

from airflow_provider_exactonline.mirror.dag import mirror_dag
from airflow_provider_exactonline.triggers.change import ExactOnlineChangeTrigger
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

# crm/Contacts: no live webhook (a lost one), the change trigger in the triggerer watches its sync/ endpoint.
CHANGE_DAG_ID = "exactonline_change_mirror"
change_trigger = ExactOnlineChangeTrigger(
    CONN_ID,
    entity="crm/Contacts",
    division=1001,
    interval=2,
    max_calls_per_hour=float(os.environ.get("EXACTONLINE_E2E_CALLS_PER_HOUR", "360")),
    watermark_id=f"{CHANGE_DAG_ID}.mirror",  # the mirror's own: what it loaded never fires
)
change_mirror = mirror_dag(
    CHANGE_DAG_ID,
    entities=["crm/Contacts"],
    db_conn_id=DB_CONN_ID,
    exactonline_conn_id=CONN_ID,
    divisions=[1001],
    path=f"{EXPORTS}/change",
    schedule=[
        change_asset(
            CONN_ID, 1001, "Contacts", watchers=[AssetWatcher(name="exactonline_contacts", trigger=change_trigger)]
        )
    ],
)
