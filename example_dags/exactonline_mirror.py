"""Mirror Exact Online into a SQL database every hour: every division of one connection, deletions applied.

Tables live in the database of the ``exactonline_mirror_db`` connection (PostgreSQL or SQLite); the
entities are the Variable ``exactonline_mirror_entities`` (comma-separated, or ``all`` for every sync
entity; default below). See docs/mirror.md.
"""

from __future__ import annotations

import os

from airflow_provider_exactonline.mirror.dag import mirror_dag

ENTITIES = os.environ.get(
    "EXACTONLINE_MIRROR_ENTITIES", "crm/Accounts,crm/Contacts,salesinvoice/SalesInvoices,financial/GLAccounts"
)

dag = mirror_dag(
    "exactonline_mirror",
    entities="all" if ENTITIES == "all" else ENTITIES.split(","),
    db_conn_id="exactonline_mirror_db",
    path=os.environ.get("EXACTONLINE_MIRROR_PATH") or None,
    tags=["exactonline", "example"],
)
