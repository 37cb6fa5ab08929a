"""Event-driven mirror: Exact Online webhooks and a cheap change trigger start the mirror, no hourly polling.

Two event sources feed one change Asset per entity (``exactonline-change://{conn}/{division}/{topic}``):

- the webhook receiver on the api-server (``/exactonline-webhooks/{conn}``), once
  ``exactonline_events_subscribe`` has subscribed it to the topics (run it once, and after a move);
- an ``AssetWatcher`` with an :class:`ExactOnlineChangeTrigger` in the triggerer: one ``sync/`` call every
  ``interval`` seconds within 2% of the division's daily budget, catching what a lost webhook missed.

``exactonline_events_mirror`` (the mirror DAG factory) runs on any change of any of them; a burst of
changes starts one run. See docs/events.md.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, AssetWatcher

from airflow_provider_exactonline.mirror.dag import mirror_dag
from airflow_provider_exactonline.operators.webhooks import ExactOnlineWebhookSubscriptionOperator
from airflow_provider_exactonline.triggers.change import ExactOnlineChangeTrigger
from airflow_provider_exactonline.webhooks.assets import change_asset, topic_of

CONN_ID = "exactonline_default"
DIVISION = int(os.environ.get("EXACTONLINE_EVENTS_DIVISION", "1001"))
ENTITIES = ["crm/Accounts", "crm/Contacts"]
MIRROR_DAG_ID = "exactonline_events_mirror"
#: The receiver's public HTTPS URL (None: [api] base_url + /exactonline-webhooks/exactonline_default).
CALLBACK_URL = os.environ.get("EXACTONLINE_EVENTS_CALLBACK_URL") or None


def watched(entity: str) -> object:
    trigger = ExactOnlineChangeTrigger(
        CONN_ID,
        entity=entity,
        division=DIVISION,
        interval=float(os.environ.get("EXACTONLINE_EVENTS_INTERVAL", "900")),
        budget_share=0.02,  # at most 2% of the division's daily calls (5000 -> ~4 an hour)
        watermark_id=f"{MIRROR_DAG_ID}.mirror",  # what the mirror already loaded never fires
    )
    return change_asset(
        CONN_ID, DIVISION, entity, watchers=[AssetWatcher(name=f"exactonline_{topic_of(entity)}", trigger=trigger)]
    )


assets = [watched(entity) for entity in ENTITIES]
any_change = assets[0]
for asset in assets[1:]:
    any_change = any_change | asset

dag = mirror_dag(
    MIRROR_DAG_ID,
    entities=ENTITIES,
    db_conn_id="exactonline_mirror_db",
    exactonline_conn_id=CONN_ID,
    divisions=[DIVISION],
    path=os.environ.get("EXACTONLINE_MIRROR_PATH") or None,
    schedule=any_change,
    tags=["exactonline", "example", "events"],
)

with DAG(
    "exactonline_events_subscribe",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["exactonline", "example", "events"],
) as subscribe_dag:
    ExactOnlineWebhookSubscriptionOperator(
        task_id="subscribe",
        exactonline_conn_id=CONN_ID,
        topics=[topic_of(entity) for entity in ENTITIES],
        division=DIVISION,
        callback_url=CALLBACK_URL,
    )
