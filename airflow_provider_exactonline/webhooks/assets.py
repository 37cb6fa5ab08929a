"""The Asset a change in Exact Online is announced on: ``exactonline-change://{conn_id}/{division}/{topic}``.

Both event sources feed the same Asset: the webhook receiver (a callback for ``Topic`` in ``Division``)
and the :class:`~airflow_provider_exactonline.triggers.change.ExactOnlineChangeTrigger` (a poll of the
entity's ``sync/`` endpoint). It is deliberately not the mirror DAG's table Asset
(``exactonline-mirror://{db_conn_id}/{table}``, which says "the table was loaded"): a mirror DAG scheduled
on its own outlet would trigger itself forever.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

CHANGE_SCHEME = "exactonline-change"
_TOPIC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_CONN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def topic_of(entity: str) -> str:
    """Exact's webhook topic for a catalog entity: its name (``crm/Accounts`` -> ``Accounts``)."""
    return entity.strip("/").rsplit("/", 1)[-1]


def change_asset_uri(exactonline_conn_id: str, division: int, topic: str) -> str:
    """``exactonline-change://exactonline_default/1001/Accounts``; ``topic`` may be an entity (``crm/Accounts``)."""
    topic = topic_of(topic)
    if not _CONN_ID_RE.match(exactonline_conn_id or ""):
        raise ExactOnlineConfigError(
            f"Connection id {exactonline_conn_id!r} cannot name a change Asset; use letters, digits, '_', '.', '-'"
        )
    if not _TOPIC_RE.match(topic):
        raise ExactOnlineConfigError(f"Webhook topic {topic!r} is not a topic name; use e.g. 'Accounts'")
    if isinstance(division, bool) or not isinstance(division, int) or division <= 0:
        raise ExactOnlineConfigError(f"Division {division!r} must be a positive whole number, e.g. 1001")
    return f"{CHANGE_SCHEME}://{exactonline_conn_id}/{division}/{topic}"


def change_asset(exactonline_conn_id: str, division: int, topic: str, *, watchers: list[Any] | None = None) -> Any:
    """The :class:`airflow.sdk.Asset` (named by its URI) to schedule a DAG on; ``watchers`` are
    ``AssetWatcher`` s, e.g. with an :class:`~airflow_provider_exactonline.triggers.change.ExactOnlineChangeTrigger`."""
    from airflow.sdk import Asset

    uri = change_asset_uri(exactonline_conn_id, division, topic)
    return Asset(name=uri, uri=uri, watchers=list(watchers or []))
