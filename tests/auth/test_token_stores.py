"""Token stores: the Variable lease under slow writes, connection extras under a row lock, process detection."""

from __future__ import annotations

import contextlib
import json
import random
import sys
import threading
import time
import types

import pytest

from airflow_provider_exactonline.auth import (
    ConnectionExtrasTokenStore,
    ConnectionReadOnlySource,
    InMemoryTokenStore,
    StoreStateChanged,
    TokenManager,
    TokenState,
    VariableTokenStore,
    default_stores,
)
from airflow_provider_exactonline.config import ExactOnlineConfig
from airflow_provider_exactonline.exceptions import ExactOnlineAuthError

from .conftest import authorized_state


class SlowVariables:
    """A Variable backend whose writes land after a random delay (as the Execution API's do under load)."""

    def __init__(self, max_write_delay: float) -> None:
        self.values: dict[str, str] = {}
        self.max_write_delay = max_write_delay
        self._lock = threading.Lock()
        self.writes = 0

    def get(self, key: str) -> str | None:
        with self._lock:
            return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        time.sleep(random.uniform(0, self.max_write_delay))
        with self._lock:
            self.values[key] = value
            self.writes += 1


def test_variable_lease_is_exclusive_under_slow_writes() -> None:
    backend = SlowVariables(max_write_delay=0.15)
    inside, peak, entries = [0], [0], [0]
    guard = threading.Lock()

    def worker() -> None:
        store = VariableTokenStore("c", client_secret="s", settle_delay=0.3, backend=backend, lock_timeout=60)
        for _ in range(3):
            with store.lock():
                with guard:
                    inside[0] += 1
                    entries[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0.02)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert entries[0] == 18 and peak[0] == 1
    assert json.loads(backend.values["exactonline_lease__c"])["owner"] is None  # released


def test_variable_lease_waiter_sees_new_state_instead_of_queueing() -> None:
    backend = SlowVariables(max_write_delay=0.0)
    holder = VariableTokenStore("c", client_secret="s", settle_delay=0.05, backend=backend)
    waiter = VariableTokenStore("c", client_secret="s", settle_delay=0.05, backend=backend)
    state = TokenState("a-token-1", "r-token-1", 100, 0)
    with holder.lock():
        threading.Timer(0.2, holder.save, args=(state,)).start()
        with pytest.raises(StoreStateChanged), waiter.lock():
            pass  # pragma: no cover - never entered
    assert waiter.load() == state


def test_variable_lease_times_out_with_a_clear_error() -> None:
    backend = SlowVariables(max_write_delay=0.0)
    holder = VariableTokenStore("c", client_secret="s", settle_delay=0.01, backend=backend)
    waiter = VariableTokenStore("c", client_secret="s", settle_delay=0.01, backend=backend, lock_timeout=0.5)
    with holder.lock(), pytest.raises(ExactOnlineAuthError, match="could not take the token lease"), waiter.lock():
        pass  # pragma: no cover


def test_expired_lease_is_taken_over() -> None:
    backend = SlowVariables(max_write_delay=0.0)
    backend.values["exactonline_lease__c"] = json.dumps({"owner": "dead-process", "expires_at": time.time() - 1})
    with VariableTokenStore("c", client_secret="s", settle_delay=0.01, backend=backend).lock():
        assert "dead-process" not in backend.values["exactonline_lease__c"]


def test_manager_over_variable_store_refreshes_once(fake, clock, config) -> None:
    backend = SlowVariables(max_write_delay=0.05)
    first = VariableTokenStore(config.conn_id, settle_delay=0.1, backend=backend, client_secret=config.client_secret)
    first.save(authorized_state(fake, clock))
    managers = [
        TokenManager(
            config,
            [VariableTokenStore(config.conn_id, settle_delay=0.1, backend=backend, client_secret=config.client_secret)],
            clock=clock,
        )
        for _ in range(4)
    ]
    clock.advance(600)
    results: list[str] = []
    threads = [threading.Thread(target=lambda m=m: results.append(m.access_token())) for m in managers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [fake.current_access_token] * 4
    assert [c.outcome for c in fake.token_calls if c.grant_type == "refresh_token"] == ["ok"]


# --- metadata DB (the session's sqlite DB) -------------------------------------------------------
@pytest.fixture
def db_connection():
    from airflow_db import migrate

    migrate()
    from airflow.models import Connection
    from airflow.utils.session import create_session

    conn_id = f"exact_store_{random.randrange(10**9)}"
    with create_session() as session:
        session.add(
            Connection(
                conn_id=conn_id,
                conn_type="exactonline",
                password="a-client-secret",
                extra=json.dumps({"division": 1001, "keep": "me"}),
            )
        )
    yield conn_id
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == conn_id).delete()


def test_connection_extras_store_merges_and_never_drops_keys(db_connection) -> None:
    store = ConnectionExtrasTokenStore(db_connection)
    assert store.load() is None
    state = TokenState("an-access-token", "a-refresh-token", 1600.0, 1000.0, last_error="x")
    store.save(state)
    assert store.load() == state
    with store.lock():
        store.save(TokenState("an-access-token-2", "a-refresh-token-2", 2600.0, 2000.0))
    from airflow.models import Connection

    extras = Connection.get_connection_from_secrets(db_connection).extra_dejson
    assert extras["division"] == 1001 and extras["keep"] == "me"
    assert extras["refresh_token"] == "a-refresh-token-2" and "last_refresh_error" not in extras


def test_connection_extras_save_survives_an_error_inside_the_lock(db_connection) -> None:
    store = ConnectionExtrasTokenStore(db_connection)
    state = TokenState("an-access-token", "a-refresh-token", 1600.0, 1000.0)
    with contextlib.suppress(RuntimeError), store.lock():
        store.save(state)
        raise RuntimeError("crash after the token call")
    assert store.load() == state  # committed, not rolled back: the old pair is already dead


def test_connection_extras_lock_is_exclusive(db_connection) -> None:
    store_a, store_b = ConnectionExtrasTokenStore(db_connection), ConnectionExtrasTokenStore(db_connection)
    order: list[str] = []

    def other() -> None:
        with store_b.lock():
            order.append("b")

    with store_a.lock():
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.3)
        order.append("a")
    thread.join(10)
    assert order == ["a", "b"]


def test_default_stores_per_process_kind(db_connection, monkeypatch) -> None:
    config = ExactOnlineConfig(db_connection, "http://127.0.0.1:1", "cid", "secret-x")
    assert [s.name for s in default_stores(config, {})] == ["connection-extras", "variable"]
    env_only = ExactOnlineConfig("only_in_env", "http://127.0.0.1:1", "cid", "secret-x")
    stores = default_stores(env_only, {})
    assert [type(s) for s in stores] == [VariableTokenStore, ConnectionReadOnlySource]
    # A Task SDK process: the supervisor comms exist (this is what Airflow itself checks).
    runner = types.ModuleType("airflow.sdk.execution_time.task_runner")
    runner.SUPERVISOR_COMMS = object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow.sdk.execution_time.task_runner", runner)
    assert [s.name for s in default_stores(config, {})] == ["variable", "connection (read-only)"]


def test_variable_store_through_the_orm(db_connection) -> None:
    store = VariableTokenStore(db_connection, settle_delay=0.05)
    state = TokenState("an-access-token", "a-refresh-token", 1600.0, 1000.0)
    with store.lock():
        store.save(state)
    from airflow.models import Variable

    assert VariableTokenStore(db_connection).load() == state  # key from the connection's password, looked up
    assert "a-refresh-token" not in Variable.get(f"exactonline_token__{db_connection}")

    assert json.loads(Variable.get(f"exactonline_lease__{db_connection}"))["owner"] is None


def test_in_memory_store_lock_is_a_thread_lock() -> None:
    store = InMemoryTokenStore()
    with store.lock():
        assert not store._lock.acquire(blocking=False)
