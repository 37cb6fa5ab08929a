"""ExactOnlineWebhookSubscriptionOperator: make sure topics are (or are no longer) subscribed in a division."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError
from airflow_provider_exactonline.operators.base import _ExactOnlineBase

if TYPE_CHECKING:
    from airflow.sdk import Context


class ExactOnlineWebhookSubscriptionOperator(_ExactOnlineBase):
    """Subscribe ``callback_url`` to each of ``topics`` in ``division`` (or unsubscribe with ``state="absent"``).

    Idempotent both ways: an existing identical subscription is reused, a missing one is not an error, so
    the task can run on every deploy. Returns the subscriptions (``state="present"``) or the removed IDs.

    :param topics: Exact topics (entity names), e.g. ``["Accounts", "SalesInvoices"]``.
    :param division: the division (templated).
    :param callback_url: the receiver's public HTTPS URL; default ``[api] base_url`` +
        ``/exactonline-webhooks/{exactonline_conn_id}``.
    :param state: ``"present"`` (default) or ``"absent"``.
    """

    template_fields: Sequence[str] = ("topics", "division", "callback_url")

    def __init__(
        self,
        *,
        topics: Sequence[str] | str,
        division: int | str,
        callback_url: str | None = None,
        state: str = "present",
        description: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if state not in ("present", "absent"):
            raise ExactOnlineConfigError(f"state={state!r}: use 'present' (subscribe) or 'absent' (unsubscribe)")
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics:
            raise ExactOnlineConfigError("topics is empty; name at least one, e.g. ['Accounts']")
        self.division = division
        self.callback_url = callback_url
        self.state = state
        self.description = description

    def _callback_url(self) -> str:
        if self.callback_url:
            return self.callback_url
        from airflow.configuration import conf

        from airflow_provider_exactonline.webhooks.subscriptions import receiver_url

        return receiver_url(conf.get("api", "base_url", fallback="") or "", self.exactonline_conn_id)

    def execute(self, context: Context) -> list[Any]:
        from airflow_provider_exactonline.config import parse_division
        from airflow_provider_exactonline.webhooks.subscriptions import subscribe, unsubscribe_matching

        division = parse_division(self.division, self.exactonline_conn_id)
        if division is None:
            raise ExactOnlineConfigError("division is required: webhook subscriptions are per division")
        url = self._callback_url()
        if self.state == "absent":
            removed = [i for t in self.topics for i in unsubscribe_matching(self.hook, t, url, division=division)]
            self.log.info("Exact Online webhooks: removed %d subscription(s) of %s", len(removed), url)
            return removed
        result = []
        for topic in self.topics:
            row = subscribe(self.hook, topic, url, division=division, description=self.description)
            result.append({"ID": row.get("ID"), "Topic": row.get("Topic"), "CallbackURL": row.get("CallbackURL")})
        self.log.info("Exact Online webhooks: %s subscribed to %s in %s", url, self.topics, division)
        return result
