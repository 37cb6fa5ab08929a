"""The UI's OAuth state: single use across threads/workers, expiry, pruning, nothing written on refusal."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_exactonline.plugins import state as st

REDIRECT = "https://airflow.example.com/exactonline/callback"


def test_conn_id_round_trip_and_malformed() -> None:
    for conn_id in ("exact", "exact.prod-1", "weird id/é"):
        assert st.conn_id_from_state(st.new_state(conn_id)) == conn_id
    for bad in (None, "", "abc", "a.b", "a." + "x" * 42, "!!." + "x" * 43):
        with pytest.raises(st.StateError):
            st.conn_id_from_state(bad)


def test_only_one_of_two_concurrent_callbacks_wins(conns: Any) -> None:
    conns.put("exact_race", host="nl", extra={"division": 5})
    state = st.issue_state("exact_race", "admin", REDIRECT)
    results: list[Any] = []
    barrier = threading.Barrier(4)

    def consume() -> None:
        barrier.wait()
        try:
            results.append(st.consume_state(state, "admin"))
        except st.StateError as err:
            results.append(err)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    wins = [r for r in results if isinstance(r, st.PendingAuthorization)]
    assert len(results) == 4 and len(wins) == 1
    assert wins[0].redirect_uri == REDIRECT and wins[0].conn_id == "exact_race"
    assert conns.extras("exact_race") == {"division": 5}  # record removed, other keys kept


def test_pending_records_are_pruned_and_capped(conns: Any) -> None:
    conns.put("exact_prune", host="nl")
    now = time.time()
    st.issue_state("exact_prune", "admin", REDIRECT, now=now - 3600)  # long expired
    states = [st.issue_state("exact_prune", "admin", REDIRECT, now=now + i) for i in range(st.MAX_PENDING + 2)]
    pending = conns.extras("exact_prune")[st.PENDING_KEY]
    assert len(pending) == st.MAX_PENDING
    assert set(pending) == {st.state_digest(s) for s in states[-st.MAX_PENDING :]}
    with pytest.raises(st.StateError, match="unknown or was already used"):
        st.consume_state(states[0], "admin", now=now + 10)  # pushed out by newer ones


def test_other_user_leaves_the_record_alone(conns: Any) -> None:
    conns.put("exact_user", host="nl")
    state = st.issue_state("exact_user", "alice", REDIRECT)
    before = conns.extras("exact_user")
    with pytest.raises(st.StateError, match="another Airflow user"):
        st.consume_state(state, "bob")
    assert conns.extras("exact_user") == before
    assert st.consume_state(state, "alice").user_id == "alice"


def test_issue_for_missing_connection(conns: Any) -> None:
    with pytest.raises(LookupError):
        st.issue_state("no_such_connection", "admin", REDIRECT)
    with pytest.raises(st.StateError):
        st.consume_state(st.new_state("no_such_connection"), "admin")


# ------------------------------------------------------------------------------------------ the row lock


def _pg_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3).close()
    except Exception:
        return False
    return True


@pytest.fixture
def pg_orm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Airflow's non-scoped sessions pointed at a throw-away PostgreSQL DB holding just the connection table."""
    if not _pg_available():
        pytest.skip("needs PostgreSQL at 127.0.0.1:5432 (user postgres)")
    import psycopg2
    from airflow import settings
    from airflow.models.connection import Connection
    from airflow.models.team import Team
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    name = f"exactonline_rowlock_{secrets.token_hex(4)}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    try:
        Connection.metadata.create_all(engine, tables=[Team.__table__, Connection.__table__])
        monkeypatch.setattr(settings, "NonScopedSession", sessionmaker(bind=engine, expire_on_commit=False))
        yield engine
    finally:
        engine.dispose()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_ui_row_lock_times_out_on_postgresql_instead_of_hanging(pg_orm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.connection import Connection
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from airflow_provider_exactonline.exceptions import ExactOnlineAuthError

    monkeypatch.setenv("AIRFLOW__EXACTONLINE__TOKEN_LOCK_TIMEOUT", "1")
    with Session(pg_orm) as session:
        session.add(Connection(conn_id="exact_pg", conn_type="exactonline", host="nl", extra='{"keep": 1}'))
        session.commit()
    # A stuck token refresh elsewhere holds the row lock.
    holder = pg_orm.connect()
    transaction = holder.begin()
    holder.execute(text("SELECT id FROM connection WHERE conn_id = 'exact_pg' FOR UPDATE"))
    outcome: list[Any] = []

    def save() -> None:
        try:
            st.save_division("exact_pg", 7, "Seven")
            outcome.append("written")
        except Exception as err:
            outcome.append(err)

    worker = threading.Thread(target=save, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout=20)
    hung = worker.is_alive()
    waited = time.monotonic() - started
    transaction.rollback()
    holder.close()
    worker.join(timeout=20)
    assert not hung, "the UI's row lock waited behind a stuck holder with no timeout"
    assert len(outcome) == 1 and isinstance(outcome[0], ExactOnlineAuthError), outcome
    assert "could not lock the connection row within 1 s" in str(outcome[0]) and waited < 10
    st.save_division("exact_pg", 7, "Seven")  # free again: written, other keys kept
    with Session(pg_orm) as session:
        row = session.query(Connection).filter(Connection.conn_id == "exact_pg").one()
        assert row.extra_dejson == {"keep": 1, "division": 7, "division_name": "Seven"}


def test_ui_row_lock_is_the_token_store_lock(conns: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issuing a state waits for a token rotation holding the row, and gives up after the lock timeout."""
    from airflow_provider_exactonline.auth.token_stores import ConnectionExtrasTokenStore
    from airflow_provider_exactonline.exceptions import ExactOnlineAuthError

    conns.put("exact_busy", host="nl")
    monkeypatch.setenv("AIRFLOW__EXACTONLINE__TOKEN_LOCK_TIMEOUT", "0.3")
    with (
        ConnectionExtrasTokenStore("exact_busy").lock(),
        pytest.raises(ExactOnlineAuthError, match="could not take the token lock file"),
    ):
        st.issue_state("exact_busy", "admin", REDIRECT)
    assert st.PENDING_KEY not in conns.extras("exact_busy")
    st.issue_state("exact_busy", "admin", REDIRECT)
    assert len(conns.extras("exact_busy")[st.PENDING_KEY]) == 1
