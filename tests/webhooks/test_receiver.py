"""The webhook receiver in-process: Airflow's real api-server app (plugin mount) and metadata DB (SQLite).

The end-to-end path with real api-server, scheduler and DAG runs is tests/webhooks/test_webhooks_e2e.py.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_exactonline.webhooks.hashcode import sign

SECRET = "receiver-test-secret"
CONN_ID = "exact_receiver"


def body(content: dict[str, Any], secret: str = SECRET, *, hash_code: str | None = None) -> bytes:
    raw = json.dumps(content, separators=(",", ":"))
    signature = sign(raw.encode(), secret) if hash_code is None else hash_code
    return f'{{"Content":{raw},"HashCode":"{signature}"}}'.encode()


def content(key: str | None = None, topic: str = "Accounts", division: int = 1001) -> dict[str, Any]:
    return {
        "Topic": topic,
        "ClientId": "fake-client-id",
        "Action": "Update",
        "Division": division,
        "Key": key or str(uuid.uuid4()),
        "ExactOnlineEndpoint": "http://127.0.0.1/api/v1/1001/crm/Accounts",
    }


@pytest.fixture(scope="module")
def airflow_db() -> None:
    from airflow_db import migrate

    migrate()


@pytest.fixture
def connection(airflow_db: None) -> Iterator[None]:
    key = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    os.environ[key] = json.dumps(
        {
            "conn_type": "exactonline",
            "host": "http://127.0.0.1:9",
            "login": "fake-client-id",
            "password": "x",
            "extra": {"webhook_secret": SECRET},
        }
    )
    os.environ["AIRFLOW_CONN_EXACT_NO_SECRET"] = json.dumps(
        {"conn_type": "exactonline", "host": "http://127.0.0.1:9", "login": "c", "password": "x"}
    )
    yield
    os.environ.pop(key, None)
    os.environ.pop("AIRFLOW_CONN_EXACT_NO_SECRET", None)


@pytest.fixture
def asset_uri(airflow_db: None) -> str:
    """An Asset a DAG would declare (registered directly, as the dag-processor would)."""
    from airflow.models.asset import AssetActive, AssetModel
    from airflow.utils.session import create_session

    from airflow_provider_exactonline.webhooks.assets import change_asset_uri

    uri = change_asset_uri(CONN_ID, 1001, "Accounts")
    with create_session() as session:
        if not session.query(AssetModel).filter(AssetModel.uri == uri).count():
            session.add(AssetModel(name=uri, uri=uri))
            session.add(AssetActive(name=uri, uri=uri))
    return uri


def events(uri: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == uri)
            .all()
        )
        return [dict(row.extra) for row in rows]


def pending() -> int:
    from airflow.utils.session import create_session

    from airflow_provider_exactonline.webhooks import ledger

    with create_session() as session:
        ledger.ensure_tables(session.get_bind())
        return ledger.pending_count(session)


@pytest.fixture
def receiver(connection: None) -> Any:
    from airflow_provider_exactonline.webhooks.receiver import Receiver, ReceiverSettings

    return Receiver(ReceiverSettings(debounce=0.0, max_bytes=4096))


@pytest.fixture
def client(receiver: Any) -> Any:
    from fastapi.testclient import TestClient

    from airflow_provider_exactonline.webhooks.receiver import create_app

    return TestClient(create_app(receiver))


def test_the_plugin_mounts_the_receiver_on_the_api_server_without_login(connection: None) -> None:
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app())
    assert client.post(f"/exactonline-webhooks/{CONN_ID}", content=b"").json() == {"status": "validated"}
    assert client.post("/exactonline-webhooks/no_such_conn", content=b"").status_code == 404


def test_a_genuine_callback_becomes_one_asset_event_with_topic_action_key(client: Any, asset_uri: str) -> None:
    before = len(events(asset_uri))
    change = content()
    response = client.post(f"/{CONN_ID}", content=body(change))
    assert response.status_code == 202, response.text
    assert response.json()["asset"] == asset_uri
    new = events(asset_uri)[before:]
    assert len(new) == 1
    assert {k: new[0][k] for k in ("topic", "action", "key", "division")} == {
        "topic": "Accounts",
        "action": "Update",
        "key": change["Key"],
        "division": 1001,
    }


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda c: body(c, "another-secret"), 401),  # forged: signed with another secret
        (lambda c: body(c).replace(b'"Update"', b'"Delete"'), 401),  # altered after signing
        (lambda c: json.dumps({"Content": c}).encode(), 401),  # unsigned
        (lambda c: body(c, hash_code=""), 401),
        (lambda c: b'{"HashCode": "AB"}', 400),
        (lambda c: b"x" * 5000, 413),
    ],
    ids=["other-secret", "altered", "unsigned", "empty-hash", "no-content", "oversized"],
)
def test_bad_callbacks_are_refused_and_record_nothing(client: Any, asset_uri: str, make: Any, status: int) -> None:
    before = len(events(asset_uri))
    response = client.post(f"/{CONN_ID}", content=make(content()))
    assert response.status_code == status, response.text
    assert response.json()["status"] == "refused"
    assert len(events(asset_uri)) == before
    assert pending() == 0


def test_an_oversized_stream_is_cut_off_without_content_length(client: Any, asset_uri: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    response = client.post(f"/{CONN_ID}", content=chunks())  # chunked: no Content-Length
    assert response.status_code == 413
    assert pending() == 0


def test_a_replay_is_refused_even_by_another_receiver(client: Any, asset_uri: str, connection: None) -> None:
    from fastapi.testclient import TestClient

    from airflow_provider_exactonline.webhooks.receiver import Receiver, ReceiverSettings, create_app

    signed = body(content())
    assert client.post(f"/{CONN_ID}", content=signed).status_code == 202
    before = len(events(asset_uri))
    other_worker = TestClient(create_app(Receiver(ReceiverSettings(debounce=0.0))))
    response = other_worker.post(f"/{CONN_ID}", content=signed)
    assert response.status_code == 409, response.text
    assert len(events(asset_uri)) == before


def test_a_connection_without_secret_is_refused_with_the_fix(client: Any) -> None:
    response = client.post("/exact_no_secret", content=body(content()))
    assert response.status_code == 503
    assert "webhook_secret" in response.json()["detail"]
    assert SECRET not in response.text


def test_a_burst_is_held_until_it_settles_then_recorded_in_one_go(connection: None, asset_uri: str) -> None:
    from airflow_provider_exactonline.webhooks.receiver import Receiver, ReceiverSettings

    now = [1_000_000.0]
    receiver = Receiver(ReceiverSettings(debounce=5.0, max_delay=60.0), clock=lambda: now[0])
    before = len(events(asset_uri))
    for second in range(4):
        now[0] += 1
        assert receiver.accept(CONN_ID, body(content(key=f"k{second}-{uuid.uuid4()}")))["status"] == "accepted"
        assert receiver.flush() == 0  # still arriving
    assert pending() == 4
    now[0] += 5.1
    assert receiver.flush() == 4
    assert pending() == 0
    assert len(events(asset_uri)) == before + 4
