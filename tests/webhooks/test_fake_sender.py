"""The fake's webhook sender, received over real loopback HTTP by a tiny server that verifies signatures."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_exactonline.testing.webhooks import FakeWebhookSender, topic_of
from airflow_provider_exactonline.webhooks.signature import ReplayGuard, WebhookRefused, is_validation_request, verify
from airflow_provider_exactonline.webhooks.subscriptions import subscribe, unsubscribe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hooks"))
from hook_support import FAKE_DIVISION, fake_hook  # tests/ is not a package

SECRET = "whs-sender-secret-91"


class Receiver:
    """An HTTP callback that records validations, verified contents and refusals (by error class name)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.guard = ReplayGuard(window=600)
        self.validations = 0
        self.accepted: list[dict[str, Any]] = []
        self.raw_accepted: list[bytes] = []
        self.refused: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.handle(raw)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/exactonline/webhooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, raw: bytes) -> int:
        with self.lock:
            if is_validation_request(raw):
                self.validations += 1
                return 200
            try:
                content = verify(raw, self.secret, seen=self.guard)
            except WebhookRefused as err:
                self.refused.append(type(err).__name__)
                return err.http_status
            self.accepted.append(content)
            self.raw_accepted.append(raw)
            return 200

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET)
    yield r
    r.close()


def test_a_write_on_a_subscribed_topic_gives_exactly_one_genuine_delivery(receiver: Receiver) -> None:
    with fake_hook() as (fake, hook, _store), FakeWebhookSender(fake, SECRET) as sender:
        subscription = subscribe(hook, "Accounts", receiver.url, division=FAKE_DIVISION)
        assert sender.wait_idle()
        assert receiver.validations == 1  # the validation POST on subscribe

        created = hook.create("crm/Accounts", {"Name": "Webhook B.V."}, division=FAKE_DIVISION)
        fake.create_record("logistics/Items", FAKE_DIVISION, {"Code": "W1", "Description": "not subscribed"})
        assert sender.wait_idle()
        assert len(receiver.accepted) == 1 and receiver.refused == []
        content = receiver.accepted[0]
        assert content["Topic"] == "Accounts" and content["Action"] == "Create"
        assert content["Division"] == FAKE_DIVISION and content["Key"] == created["ID"].lower()
        assert content["ClientId"] == fake.client_id
        assert content["ExactOnlineEndpoint"].endswith(f"/api/v1/{FAKE_DIVISION}/crm/Accounts(guid'{content['Key']}')")

        fake.update_record("crm/Accounts", FAKE_DIVISION, created["ID"], {"Name": "Renamed"})
        assert sender.wait_idle()
        assert [c["Action"] for c in receiver.accepted] == ["Create", "Update"]
        assert sender.failed == 0 and sender.delivered == 3

        unsubscribe(hook, subscription["ID"], division=FAKE_DIVISION)
        fake.update_record("crm/Accounts", FAKE_DIVISION, created["ID"], {"Name": "After unsubscribe"})
        assert sender.wait_idle()
        assert len(receiver.accepted) == 2  # nothing after unsubscribing


def test_a_sender_with_another_secret_is_refused_as_forged(receiver: Receiver) -> None:
    with fake_hook() as (fake, hook, _store), FakeWebhookSender(fake, "not-the-receivers-secret") as sender:
        subscribe(hook, "Accounts", receiver.url, division=FAKE_DIVISION)
        fake.create_record("crm/Accounts", FAKE_DIVISION, {"Name": "Forged B.V."})
        assert sender.wait_idle()
        assert receiver.accepted == [] and receiver.refused == ["WebhookForged"]
        assert [(d.kind, d.status) for d in sender.deliveries] == [("validation", 200), ("event", 401)]
        assert sender.failed == 1


def test_a_captured_delivery_sent_again_is_refused_as_a_replay(receiver: Receiver) -> None:
    with fake_hook() as (fake, hook, _store), FakeWebhookSender(fake, SECRET) as sender:
        subscribe(hook, "Accounts", receiver.url, division=FAKE_DIVISION)
        row = fake.create_record("crm/Accounts", FAKE_DIVISION, {"Name": "Replay B.V."})
        fake.delete_record("crm/Accounts", FAKE_DIVISION, row["ID"])
        assert sender.wait_idle()
        assert [c["Action"] for c in receiver.accepted] == ["Create", "Delete"]
    replayed = requests.post(receiver.url, data=receiver.raw_accepted[0], timeout=5)
    assert replayed.status_code == 409 and receiver.refused == ["WebhookReplayed"]
    assert len(receiver.accepted) == 2


def test_unreachable_callbacks_are_counted_never_raised_into_the_fake() -> None:
    with fake_hook() as (fake, hook, _store), FakeWebhookSender(fake, SECRET, timeout=0.5) as sender:
        dead = Receiver(SECRET)
        url = dead.url
        dead.close()  # nothing listens on that port any more
        subscribe(hook, "Accounts", url, division=FAKE_DIVISION)
        created = hook.create("crm/Accounts", {"Name": "Nobody listens"}, division=FAKE_DIVISION)
        assert created["ID"]
        assert sender.wait_idle()
        assert sender.delivered == 0 and sender.failed == 2
        assert all(d.status is None and d.error for d in sender.deliveries)


def test_topic_is_the_entity_name() -> None:
    assert topic_of("crm/Accounts") == "Accounts"
    assert topic_of("salesinvoice/SalesInvoices") == "SalesInvoices"


def test_the_sender_never_imports_airflow() -> None:
    import subprocess

    code = (
        "import sys; from airflow_provider_exactonline.testing.webhooks import FakeWebhookSender; "
        "assert 'airflow' not in sys.modules, 'airflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
