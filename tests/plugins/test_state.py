"""The UI's OAuth state: single use across threads/workers, expiry, pruning, nothing written on refusal."""

from __future__ import annotations

import threading
import time
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
