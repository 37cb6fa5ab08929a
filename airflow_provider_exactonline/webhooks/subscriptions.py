"""Create, list and delete Exact Online webhook subscriptions (``webhooks/WebhookSubscriptions``).

Subscriptions are per topic and division and cannot be updated. :func:`subscribe` is idempotent: an
existing subscription with the same ``CallbackURL`` and ``Topic`` is returned instead of a duplicate.
Arguments Exact would refuse are refused here first, since every 400 counts toward the error block.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_exactonline import odata
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

if TYPE_CHECKING:
    from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

ENTITY = "webhooks/WebhookSubscriptions"
_TOPIC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def subscribe(
    hook: ExactOnlineHook,
    topic: str,
    callback_url: str,
    *,
    division: int,
    description: str | None = None,
) -> dict[str, Any]:
    """The subscription of ``callback_url`` to ``topic`` (e.g. ``"Accounts"``) in ``division``; created if new."""
    _check_topic(topic)
    _check_callback_url(callback_url)
    for existing in _matching(hook, topic, callback_url, division):
        return existing
    data: dict[str, Any] = {"CallbackURL": callback_url, "Topic": topic}
    if description:
        data["Description"] = description
    return hook.create(ENTITY, data, division=division)


def list_subscriptions(hook: ExactOnlineHook, *, division: int) -> list[dict[str, Any]]:
    """Every webhook subscription of ``division`` (of all apps the user can see)."""
    return list(hook.iter_records(ENTITY, division=division))


def unsubscribe(hook: ExactOnlineHook, subscription_id: str, *, division: int) -> None:
    """Delete one subscription by its ``ID`` (a GUID, checked before the call)."""
    odata.guid(subscription_id)
    hook.delete(ENTITY, subscription_id, division=division)


def unsubscribe_matching(hook: ExactOnlineHook, topic: str, callback_url: str, *, division: int) -> list[str]:
    """Delete every subscription of ``callback_url`` to ``topic``; the removed IDs (``[]`` if none: idempotent)."""
    _check_topic(topic)
    removed = []
    for row in _matching(hook, topic, callback_url, division):
        unsubscribe(hook, str(row["ID"]), division=division)
        removed.append(str(row["ID"]))
    return removed


def receiver_url(base_url: str, exactonline_conn_id: str) -> str:
    """The receiver's callback URL on an api-server reachable at ``base_url`` (its public HTTPS address)."""
    from airflow_provider_exactonline.webhooks.plugin_app import URL_PREFIX

    if not base_url:
        raise ExactOnlineConfigError(
            "No callback URL: pass callback_url=, or set [api] base_url to the api-server's public https:// URL"
        )
    return f"{base_url.rstrip('/')}{URL_PREFIX}/{exactonline_conn_id}"


def _matching(hook: ExactOnlineHook, topic: str, callback_url: str, division: int) -> list[dict[str, Any]]:
    query = f"CallbackURL eq {odata.string(callback_url)} and Topic eq {odata.string(topic)}"
    return [
        row
        for row in hook.iter_records(ENTITY, filter=query, division=division)
        if row.get("CallbackURL") == callback_url and row.get("Topic") == topic
    ]


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise ExactOnlineConfigError(
            f"Webhook topic {topic!r} is not a topic name; use Exact's entity name, e.g. 'Accounts'"
        )


def _check_callback_url(callback_url: str) -> None:
    parts = urlsplit(callback_url or "")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return  # the fake Exact calls back over loopback; the real one only calls HTTPS
    raise ExactOnlineConfigError(
        f"Webhook callback URL {callback_url!r} is refused: Exact Online only calls back over HTTPS; put the"
        " api-server behind an HTTPS proxy and use its public https:// URL"
    )
