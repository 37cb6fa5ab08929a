"""DONE-WHEN, issue 13: webhooks end to end on a real cluster (api-server, scheduler with LocalExecutor,
dag-processor on PostgreSQL) and the fake Exact Online sending real signed callbacks.

A write on the fake -> the fake's signed webhook -> the receiver on the api-server -> an Asset event ->
the mirror DAG (scheduled on that Asset) runs exactly once -> the row is in the mirror table. Forged,
unsigned, replayed and oversized callbacks are refused and leave no Asset event and no run. A burst of
writes starts one run.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from airflow_provider_exactonline.testing import FakeExactOnline
from airflow_provider_exactonline.testing.webhooks import FakeWebhookSender
from airflow_provider_exactonline.webhooks.assets import change_asset_uri
from airflow_provider_exactonline.webhooks.hashcode import sign

from .rotation_support import (
    Processes,
    cluster_env,
    free_port,
    fresh_pg_database,
    requires_pg,
    run_airflow,
    start_cluster,
)

SECRET = "e2e-webhook-secret"
CONN_ID = "exact_events"
DB_CONN_ID = "exact_events_db"
DAG_ID = "exactonline_webhook_mirror"
CHANGE_DAG_ID = "exactonline_change_mirror"  # crm/Contacts, watched by the change trigger
CALLS_PER_HOUR = 360  # the change trigger's cap (interval 2 s would be 1800 an hour)
DEBOUNCE = float(os.environ.get("EXACTONLINE_E2E_DEBOUNCE", "3"))  # 0: see what a burst costs without it
DAGS = Path(__file__).resolve().parent.parent / "webhooks" / "dags"
BURST_GAP = 0.8  # seconds between the burst's writes
ACCOUNTS_URI = change_asset_uri(CONN_ID, 1001, "Accounts")


def _query(db_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg2

    with psycopg2.connect(db_url.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


class Cluster:
    def __init__(self, db_url: str, port: int, procs: Processes, fake: FakeExactOnline, mirror_db: Path) -> None:
        self.db_url, self.port, self.procs, self.fake, self.mirror_db = db_url, port, procs, fake, mirror_db
        self.callback = f"http://127.0.0.1:{port}/exactonline-webhooks/{CONN_ID}"

    def runs(self, dag_id: str = DAG_ID) -> list[tuple[str, str]]:
        return [
            (str(r), str(s))
            for r, s in _query(self.db_url, "SELECT run_id, state FROM dag_run WHERE dag_id = %s ORDER BY id", dag_id)
        ]

    def asset_events(self, uri: str) -> list[dict[str, Any]]:
        rows = _query(
            self.db_url,
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = %s ORDER BY e.id",
            uri,
        )
        return [r[0] if isinstance(r[0], dict) else json.loads(r[0]) for r in rows]

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return time.time()
            for name, proc in self.procs.procs.items():
                assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{self.procs.dump()}"
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; runs={self.runs()}")

    def settled(self, dag_id: str = DAG_ID) -> bool:
        runs = self.runs(dag_id)
        return bool(runs) and all(state in ("success", "failed") for _, state in runs)

    def mirror_ids(self, table: str = "crm_accounts", division: int = 1001) -> set[str]:
        if not self.mirror_db.exists():
            return set()
        with sqlite3.connect(self.mirror_db) as conn:
            try:
                rows = conn.execute(f'SELECT "ID" FROM "{table}" WHERE "Division" = ?', (division,)).fetchall()
            except sqlite3.OperationalError:
                return set()
        return {str(r[0]).lower() for r in rows}


def _add_connection(env: dict[str, str], fake: FakeExactOnline) -> None:
    tokens = fake.issue_tokens()
    now = time.time()
    extra = {
        "division": 1001,
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "token_expires_at": now + float(tokens["expires_in"]),
        "token_obtained_at": now,
        "webhook_secret": SECRET,
    }
    conn = {
        "conn_type": "exactonline",
        "host": fake.base_url,
        "login": fake.client_id,
        "password": fake.client_secret,
        "extra": extra,
    }
    run_airflow(env, "connections", "add", CONN_ID, "--conn-json", json.dumps(conn))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("webhooks-e2e")
    port = free_port()
    (tmp / "logs").mkdir()
    mirror_db = tmp / "mirror.db"
    with (
        FakeExactOnline(rows={"crm/Accounts": 5, "crm/Contacts": 3}, minutely_limit=None, daily_limit=None) as fake,
        fresh_pg_database() as db_url,
    ):
        env = cluster_env(
            tmp / "home",
            db_url,
            port,
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="600",
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="600",
            AIRFLOW__EXACTONLINE__WEBHOOK_DEBOUNCE=str(DEBOUNCE),
            EXACTONLINE_E2E_CALLS_PER_HOUR=str(CALLS_PER_HOUR),
            EXACTONLINE_E2E_CONN_ID=CONN_ID,
            EXACTONLINE_E2E_DB_CONN_ID=DB_CONN_ID,
            EXACTONLINE_E2E_EXPORTS=f"file://{tmp / 'exports'}",
            AIRFLOW_CONN_EXACT_EVENTS_DB=json.dumps({"conn_type": "sqlite", "host": str(mirror_db)}),
        )
        run_airflow(env, "db", "migrate")
        _add_connection(env, fake)
        run_airflow(env, "dags", "reserialize")
        procs = Processes(tmp / "logs")
        try:
            start_cluster(procs, env, port, "dag-processor", "triggerer")
            run_airflow(env, "dags", "unpause", DAG_ID)
            run_airflow(env, "dags", "unpause", CHANGE_DAG_ID)
            yield Cluster(db_url, port, procs, fake, mirror_db)
        except BaseException:
            print(procs.dump(6000))
            raise
        finally:
            procs.stop_all()


def _signed(content: dict[str, Any], secret: str = SECRET) -> bytes:
    raw = json.dumps(content, separators=(",", ":"))
    return f'{{"Content":{raw},"HashCode":"{sign(raw.encode(), secret)}"}}'.encode()


def _content(key: str) -> dict[str, Any]:
    return {"Topic": "Accounts", "ClientId": "fake-client-id", "Action": "Update", "Division": 1001, "Key": key}


@pytest.mark.integration
@requires_pg
@pytest.mark.timeout(900)  # includes starting the cluster (module fixture)
def test_webhooks_end_to_end_on_a_real_api_server_and_scheduler(cluster: Cluster) -> None:
    figures: dict[str, Any] = {}
    post = requests.Session()

    # 1. Refused callbacks: 4xx, no Asset event, no run.
    key = "0f0e507b-9dde-458d-8358-0a70d63acd38"
    forged = post.post(cluster.callback, data=_signed(_content(key), "not-the-secret"), timeout=10)
    altered = post.post(cluster.callback, data=_signed(_content(key)).replace(b"Update", b"Delete"), timeout=10)
    unsigned = post.post(cluster.callback, data=json.dumps({"Content": _content(key)}), timeout=10)
    oversized = post.post(cluster.callback, data=b"{" + b" " * 70_000 + b"}", timeout=10)
    streamed = post.post(cluster.callback, data=iter([b" " * 8192] * 10), timeout=10)  # chunked, no length
    unknown = post.post(cluster.callback.replace(CONN_ID, "no_such_conn"), data=_signed(_content(key)), timeout=10)
    statuses = [r.status_code for r in (forged, altered, unsigned, oversized, streamed, unknown)]
    assert statuses == [401, 401, 401, 413, 413, 404], [r.text for r in (forged, altered, unsigned, oversized)]
    time.sleep(DEBOUNCE + 8)  # longer than the debounce and a few scheduler loops
    assert cluster.asset_events(ACCOUNTS_URI) == []
    assert cluster.runs() == []

    # 2. Subscribe: the fake sends Exact's empty validation POST, the receiver answers 200.
    with FakeWebhookSender(cluster.fake, SECRET, timeout=10) as sender:
        cluster.fake.create_record(
            "webhooks/WebhookSubscriptions", 1001, {"CallbackURL": cluster.callback, "Topic": "Accounts"}
        )
        assert sender.wait_idle(30)
        assert [(d.kind, d.status) for d in sender.deliveries] == [("validation", 200)]

        # 3. A genuine write -> signed webhook -> Asset event -> exactly one run -> the row is mirrored.
        written_at = time.time()
        created = cluster.fake.create_record("crm/Accounts", 1001, {"Name": "Webhook BV", "Code": "WEBHOOK"})
        assert sender.wait_idle(30)
        genuine = sender.deliveries[-1]
        assert (genuine.kind, genuine.status, genuine.key) == ("event", 202, created["ID"].lower())
        cluster.wait("the first run", lambda: cluster.settled(), 240)
        figures["write_to_run_done_s"] = round(time.time() - written_at, 1)
        time.sleep(DEBOUNCE + 6)
        runs = cluster.runs()
        assert [state for _, state in runs] == ["success"], runs
        assert created["ID"].lower() in cluster.mirror_ids()
        events = cluster.asset_events(ACCOUNTS_URI)
        assert [(e["topic"], e["action"], e["key"], e["division"]) for e in events] == [
            ("Accounts", "Create", created["ID"].lower(), 1001)
        ]

        # 4. The same genuine body again (a replay): 409, no event, no run.
        replay = post.post(cluster.callback, data=genuine.body, timeout=10)
        assert replay.status_code == 409, replay.text
        time.sleep(DEBOUNCE + 6)
        assert len(cluster.asset_events(ACCOUNTS_URI)) == 1
        assert len(cluster.runs()) == 1

        # 5. A burst of writes: one event per write, ONE run. (Airflow alone does not debounce: an event
        #    arriving after the scheduler created the run starts another run after it.)
        burst = []
        for i in range(6):  # spread over ~4 s, longer than a scheduler loop, each gap shorter than the debounce
            burst.append(cluster.fake.create_record("crm/Accounts", 1001, {"Name": f"Burst {i} BV", "Code": f"B{i}"}))
            time.sleep(BURST_GAP)
        cluster.fake.update_record("crm/Accounts", 1001, burst[0]["ID"], {"Name": "Burst 0 renamed BV"})
        assert sender.wait_idle(60)
        assert [d.status for d in sender.deliveries[-7:]] == [202] * 7
        cluster.wait("the burst's run", lambda: len(cluster.runs()) >= 2 and cluster.settled(), 240)
        time.sleep(DEBOUNCE + 10)  # would a second run follow?
        runs = cluster.runs()
        figures["runs_for_burst_of_7"] = len(runs) - 1
        figures["asset_events_for_burst"] = len(cluster.asset_events(ACCOUNTS_URI)) - 1
        assert [state for _, state in runs] == ["success", "success"], runs
        assert figures["asset_events_for_burst"] == 7
        assert {r["ID"].lower() for r in burst} <= cluster.mirror_ids()
    print("\nwebhooks e2e:", json.dumps(figures))


@pytest.mark.integration
@requires_pg
@pytest.mark.timeout(600)
def test_a_lost_webhook_is_caught_by_the_change_trigger_within_its_budget(cluster: Cluster) -> None:
    figures: dict[str, Any] = {}
    contacts = change_asset_uri(CONN_ID, 1001, "Contacts")
    # The mirror never ran, so the trigger's first poll finds the existing rows: one run, the full load.
    cluster.wait("the first (full) Contacts run", lambda: cluster.settled(CHANGE_DAG_ID), 300)
    assert [s for _, s in cluster.runs(CHANGE_DAG_ID)] == ["success"], cluster.runs(CHANGE_DAG_ID)
    first_events = len(cluster.asset_events(contacts))

    # Quiet: nothing changes, so nothing fires (it keeps polling).
    quiet_from = time.time()
    time.sleep(35)
    assert len(cluster.runs(CHANGE_DAG_ID)) == 1
    assert len(cluster.asset_events(contacts)) == first_events
    quiet_polls = [r for r in cluster.fake.requests if _is_trigger_poll(r) and r.time >= quiet_from]
    assert quiet_polls, "the trigger stopped polling"

    # A change whose webhook is lost (its callback is down): the change trigger still catches it.
    with FakeWebhookSender(cluster.fake, SECRET, timeout=2) as sender:
        dead = f"http://127.0.0.1:{free_port()}/exactonline-webhooks/{CONN_ID}"
        cluster.fake.create_record("webhooks/WebhookSubscriptions", 1001, {"CallbackURL": dead, "Topic": "Contacts"})
        written_at = time.time()
        lost = cluster.fake.create_record("crm/Contacts", 1001, {"FirstName": "Lost", "LastName": "Webhook"})
        assert sender.wait_idle(30)
        assert [d.ok for d in sender.deliveries] == [False, False]  # validation and event both lost
    cluster.wait("the run the trigger starts", lambda: len(cluster.runs(CHANGE_DAG_ID)) == 2, 120)
    cluster.wait("that run to finish", lambda: cluster.settled(CHANGE_DAG_ID), 240)
    figures["lost_change_to_run_done_s"] = round(time.time() - written_at, 1)
    assert [s for _, s in cluster.runs(CHANGE_DAG_ID)] == ["success", "success"]
    assert lost["ID"].lower() in cluster.mirror_ids("crm_contacts")
    events = cluster.asset_events(contacts)
    assert len(events) == first_events + 1, events

    # The budget, counted at the fake: never more than CALLS_PER_HOUR in the (sliding) hour.
    polls = sorted(r.time for r in cluster.fake.requests if _is_trigger_poll(r))
    span = polls[-1] - polls[0]
    figures["trigger_polls"] = len(polls)
    figures["trigger_span_s"] = round(span, 1)
    figures["trigger_calls_per_hour"] = round((len(polls) - 1) / span * 3600, 1) if span else None
    figures["min_gap_s"] = round(min(b - a for a, b in itertools.pairwise(polls)), 2)
    print("\nchange trigger e2e:", json.dumps(figures))
    assert figures["min_gap_s"] >= 3600 / CALLS_PER_HOUR - 0.5, figures  # 10 s apart although interval=2
    assert len(polls) - 1 <= span / (3600 / CALLS_PER_HOUR) + 1, figures


def _is_trigger_poll(request: Any) -> bool:
    """The change trigger's call: ``sync/CRM/Contacts`` selecting only ``Timestamp`` (the mirror selects all)."""
    return "sync/crm/contacts" in request.path.lower() and parse_qs(request.query).get("$select") == ["Timestamp"]
