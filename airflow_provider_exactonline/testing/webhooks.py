"""The fake Exact Online's webhooks: a validation POST per new subscription, a signed POST per write.

``FakeWebhookSender(fake, secret)`` listens to the fake's writes. When a ``webhooks/WebhookSubscriptions``
row is created it POSTs an empty body to its ``CallbackURL`` (Exact's validation call); after each write on
a subscribed topic (the entity's name, e.g. ``Accounts`` for ``crm/Accounts``) in that division it POSTs
``{"Content": {...}, "HashCode": "..."}`` signed like Exact. Deliveries run on one background thread in
write order, over real HTTP with a short timeout; failures are counted and logged, never raised into the
fake. Like the rest of the fake, it never imports Airflow.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from dataclasses import dataclass

import requests

from airflow_provider_exactonline.testing.events import WriteEvent
from airflow_provider_exactonline.testing.server import FakeExactOnline
from airflow_provider_exactonline.webhooks.hashcode import sign

log = logging.getLogger(__name__)

SUBSCRIPTIONS = "webhooks/WebhookSubscriptions"


@dataclass(frozen=True)
class Delivery:
    """One POST the sender made: ``kind`` is ``"validation"`` or ``"event"``; ``status`` None when it failed."""

    kind: str
    url: str
    topic: str | None
    action: str | None
    key: str | None
    status: int | None
    error: str | None = None
    body: bytes = b""  # what was POSTed (a test may replay it)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class _Subscription:
    division: int
    topic: str
    url: str


def topic_of(entity: str) -> str:
    """Exact's webhook topic for a catalog entity: its name (``crm/Accounts`` -> ``Accounts``)."""
    return entity.rsplit("/", 1)[-1]


class FakeWebhookSender:
    """Sends the fake's webhooks; use as a context manager (or :meth:`close`) to stop listening."""

    def __init__(self, fake: FakeExactOnline, secret: str, *, timeout: float = 2.0) -> None:
        self.fake = fake
        self.timeout = timeout
        self._secret = secret
        self._subscriptions: dict[str, _Subscription] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._deliveries: list[Delivery] = []
        self._queue: queue.Queue[tuple[str, str, bytes, WriteEvent | None] | None] = queue.Queue()
        self._session = requests.Session()
        self._worker = threading.Thread(target=self._run, name="fake-webhook-sender", daemon=True)
        self._worker.start()
        fake.add_write_listener(self._on_write)

    def __enter__(self) -> FakeWebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening, finish queued deliveries (bounded by the timeout) and stop the worker."""
        self.fake.remove_write_listener(self._on_write)
        self._queue.put(None)
        self._worker.join(timeout=self.timeout * 4)
        self._session.close()

    # ------------------------------------------------------------------------------------------
    # Inspection

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def delivered(self) -> int:
        return sum(1 for d in self.deliveries if d.ok)

    @property
    def failed(self) -> int:
        return sum(1 for d in self.deliveries if not d.ok)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery was made; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    # ------------------------------------------------------------------------------------------
    # Listening (called by the fake after its lock is released)

    def _on_write(self, event: WriteEvent) -> None:
        if event.entity == SUBSCRIPTIONS:
            self._on_subscription(event)
            return
        topic = topic_of(event.entity)
        with self._lock:
            targets = [s for s in self._subscriptions.values() if s.division == event.division and s.topic == topic]
        for subscription in targets:
            self._enqueue("event", subscription.url, self._payload(event, topic), event)

    def _on_subscription(self, event: WriteEvent) -> None:
        if event.action == "Delete":
            with self._lock:
                self._subscriptions.pop(event.key, None)
            return
        row = self.fake.get_record(SUBSCRIPTIONS, event.key, event.division) or {}
        url, topic = str(row.get("CallbackURL") or ""), str(row.get("Topic") or "")
        with self._lock:
            self._subscriptions[event.key] = _Subscription(event.division, topic, url)
        if event.action == "Create":
            self._enqueue("validation", url, b"", None)

    def _payload(self, event: WriteEvent, topic: str) -> bytes:
        content = {
            "Topic": topic,
            "ClientId": self.fake.client_id,
            "Action": event.action,
            "Division": event.division,
            "Key": event.key,
            "ExactOnlineEndpoint": self.fake.api_url(f"{event.entity}({_key_literal(event.key)})", event.division),
        }
        raw = json.dumps(content, separators=(",", ":"))
        signature = sign(raw.encode("utf-8"), self._secret)
        return f'{{"Content":{raw},"HashCode":"{signature}"}}'.encode()

    def _enqueue(self, kind: str, url: str, body: bytes, event: WriteEvent | None) -> None:
        with self._lock:
            self._pending += 1
        self._queue.put((kind, url, body, event))

    # ------------------------------------------------------------------------------------------
    # Delivering (one background thread, in order)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, url, body, event = item
            delivery = self._post(kind, url, body, event)
            with self._idle:
                self._deliveries.append(delivery)
                self._pending -= 1
                self._idle.notify_all()

    def _post(self, kind: str, url: str, body: bytes, event: WriteEvent | None) -> Delivery:
        topic = topic_of(event.entity) if event else None
        action, key = (event.action, event.key) if event else (None, None)
        try:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"not an http(s) callback URL: {url!r}")
            response = self._session.post(
                url, data=body, headers={"Content-Type": "application/json"}, timeout=self.timeout
            )
        except (requests.RequestException, ValueError) as err:
            log.warning("fake webhook %s to %s failed: %s", kind, url, type(err).__name__)
            return Delivery(kind, url, topic, action, key, None, type(err).__name__, body)
        if not 200 <= response.status_code < 300:
            log.warning("fake webhook %s to %s answered HTTP %s", kind, url, response.status_code)
        return Delivery(kind, url, topic, action, key, response.status_code, body=body)


def _key_literal(key: str) -> str:
    try:
        return f"guid'{uuid.UUID(key)}'"
    except ValueError:
        return key
