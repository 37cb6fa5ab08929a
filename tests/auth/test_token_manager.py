"""TokenManager against the fake Exact Online over real loopback HTTP, with a clock the test drives."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import threading
import time

import pytest
import requests

from airflow_provider_exactonline.auth import InMemoryTokenStore, TokenManager, TokenState
from airflow_provider_exactonline.auth.oauth import authorization_url, exchange_code
from airflow_provider_exactonline.config import ExactOnlineConfig
from airflow_provider_exactonline.exceptions import (
    ExactOnlineAuthError,
    ExactOnlineConfigError,
    ExactOnlineReauthorizationRequired,
)
from airflow_provider_exactonline.transport import never_reached_server

from .conftest import authorized_state
from .file_store import FileTokenStore


def refresh_grants(fake) -> list:
    return [c for c in fake.token_calls if c.grant_type == "refresh_token"]


# --- the refresh window ------------------------------------------------------------------------
def test_token_with_100s_left_is_not_refreshed(fake, clock, make_manager) -> None:
    state = authorized_state(fake, clock)
    manager = make_manager(InMemoryTokenStore(state))
    clock.advance(500)  # 100 s left of 600
    assert manager.access_token() == state.access_token
    assert manager.token_calls == 0 and refresh_grants(fake) == []


def test_token_inside_window_is_refreshed_and_persisted(fake, clock, make_manager) -> None:
    state = authorized_state(fake, clock)
    store = InMemoryTokenStore(state)
    manager = make_manager(store)
    clock.advance(584)  # Exact would allow a refresh (from 570 s), but we keep 15 s for clock skew
    assert manager.access_token() == state.access_token and refresh_grants(fake) == []
    clock.advance(1)  # 585 s: inside our window (the last 15 s)
    token = manager.access_token()
    assert token != state.access_token and token == fake.current_access_token
    assert [c.outcome for c in refresh_grants(fake)] == ["ok"]
    assert store.load().refresh_token == fake.current_refresh_token
    assert manager.token_calls == 1 and manager.access_token() == token  # cached, no new call
    assert manager.token_calls == 1


def test_expired_token_is_refreshed(fake, clock, make_manager) -> None:
    state = authorized_state(fake, clock)
    manager = make_manager(InMemoryTokenStore(state))
    clock.advance(3600)
    assert manager.access_token() == fake.current_access_token
    assert fake.refresh_errors == {}


# --- locking: re-read after the lock, persist before unlock --------------------------------------
class RacingStore(InMemoryTokenStore):
    """While we wait for the lock, another process refreshes (runs ``during_wait``)."""

    def __init__(self, state: TokenState) -> None:
        super().__init__(state)
        self.during_wait = None
        self.events: list[str] = []

    @contextlib.contextmanager
    def lock(self):
        if self.during_wait is not None:
            action, self.during_wait = self.during_wait, None
            action()
        with super().lock():
            self.events.append("locked")
            yield
            self.events.append("unlocking")

    def save(self, state: TokenState) -> None:
        self.events.append("save")
        super().save(state)


def test_rereads_after_taking_the_lock(fake, clock, make_manager) -> None:
    state = authorized_state(fake, clock)
    store = RacingStore(state)
    other = make_manager(store)
    mine = make_manager(store)
    assert mine.access_token() == state.access_token  # cached in memory
    clock.advance(590)
    store.during_wait = other.access_token  # the other process refreshes while we wait for the lock
    token = mine.access_token()
    assert token == fake.current_access_token == other.access_token()
    assert len(refresh_grants(fake)) == 1 and fake.refresh_errors == {}
    assert mine.token_calls == 0


def test_persists_before_releasing_the_lock(fake, clock, make_manager) -> None:
    store = RacingStore(authorized_state(fake, clock))
    manager = make_manager(store)
    clock.advance(600)
    manager.access_token()
    assert store.events == ["locked", "save", "unlocking"]


def _refresh_then_die(path: str, base_url: str, client_id: str, secret: str, now: float) -> None:
    """Child process: refresh, then die hard at the moment the lock is released."""

    class DyingStore(FileTokenStore):
        @contextlib.contextmanager
        def lock(self):
            with super().lock():
                yield
                os._exit(17)  # killed before unlocking: whatever was not persisted is lost

    class Frozen:
        def time(self) -> float:
            return now

        def sleep(self, seconds: float) -> None:
            time.sleep(seconds)

    config = ExactOnlineConfig("exact_test", base_url, client_id, secret)
    TokenManager(config, [DyingStore(path)], clock=Frozen()).access_token()
    os._exit(0)  # pragma: no cover - not reached


def test_kill_point_after_refresh_loses_nothing(fake, clock, config, tmp_path, make_manager) -> None:
    path = str(tmp_path / "tokens.json")
    FileTokenStore(path).save(authorized_state(fake, clock))
    clock.advance(700)
    child = multiprocessing.get_context("fork").Process(
        target=_refresh_then_die, args=(path, fake.base_url, fake.client_id, fake.client_secret, clock.time())
    )
    child.start()
    child.join(30)
    assert child.exitcode == 17
    assert FileTokenStore(path).load().refresh_token == fake.current_refresh_token  # persisted before it died
    survivor = make_manager(FileTokenStore(path))
    assert survivor.access_token() == fake.current_access_token
    assert survivor.token_calls == 0 and fake.refresh_errors == {}


# --- newest state across stores ---------------------------------------------------------------
def test_newest_state_wins_across_stores_and_seed(fake, clock, make_manager) -> None:
    old = authorized_state(fake, clock)
    clock.advance(10)
    new = authorized_state(fake, clock)  # e.g. a fresh authorization saved into the connection
    variable, extras = InMemoryTokenStore(old, name="variable"), InMemoryTokenStore(new, name="extras")
    assert make_manager(variable, extras).access_token() == new.access_token
    assert make_manager(extras, variable).access_token() == new.access_token
    assert make_manager(InMemoryTokenStore(), seed=new).access_token() == new.access_token
    assert make_manager(InMemoryTokenStore(new), seed=old).access_token() == new.access_token
    assert refresh_grants(fake) == []


def test_refresh_writes_every_writable_store(fake, clock, make_manager) -> None:
    class ReadOnly(InMemoryTokenStore):
        read_only = True

        def save(self, state):  # pragma: no cover - must not be called
            raise AssertionError("read-only store written")

    state = authorized_state(fake, clock)
    primary, mirror, seed_source = InMemoryTokenStore(state), InMemoryTokenStore(), ReadOnly(state)
    manager = make_manager(primary, mirror, seed_source)
    clock.advance(600)
    manager.access_token()
    assert primary.load() == mirror.load() == manager.state
    assert primary.load().refresh_token == fake.current_refresh_token


# --- error handling ----------------------------------------------------------------------------
def test_old_refresh_token_used_polls_then_requires_reauthorization(fake, clock, make_manager) -> None:
    stale = authorized_state(fake, clock)
    authorized_state(fake, clock)  # a newer authorization elsewhere: our refresh token is now old
    store = InMemoryTokenStore(stale)
    manager = make_manager(store, reuse_poll_seconds=0.5)
    clock.advance(700)
    started = time.monotonic()
    with pytest.raises(ExactOnlineReauthorizationRequired) as caught:
        manager.access_token()
    assert time.monotonic() - started >= 0.5  # it waited for a concurrent writer first
    assert "exact_test" in str(caught.value) and "airflow-exactonline authorize exact_test" in str(caught.value)
    assert caught.value.status_code == 401 and "Old refresh token used" in caught.value.exact_message
    assert fake.refresh_errors == {"old_refresh_token": 1}
    recorded = store.load()  # the error is recorded next to the unchanged tokens
    assert recorded.refresh_token == stale.refresh_token and "Old refresh token used" in recorded.last_error


def test_a_dead_chain_costs_one_token_call_not_one_per_waiting_process(fake, clock, make_manager) -> None:
    stale = authorized_state(fake, clock)
    authorized_state(fake, clock)  # a newer authorization elsewhere: our refresh token is now old
    store = RacingStore(stale)
    clock.advance(700)
    first, waiter = make_manager(store), make_manager(store)
    assert first.reload() == waiter.reload() == stale  # both hold the pair in memory

    def first_fails_while_waiter_waits() -> None:
        with pytest.raises(ExactOnlineReauthorizationRequired, match="Old refresh token used"):
            first.access_token()

    store.during_wait = first_fails_while_waiter_waits
    with pytest.raises(ExactOnlineReauthorizationRequired, match="not sent again") as caught:
        waiter.access_token()  # takes the lock after the failure was recorded: no call to Exact
    assert "airflow-exactonline authorize exact_test" in str(caught.value)
    assert len(refresh_grants(fake)) == 1 and waiter.token_calls == 0
    store.events.clear()
    with pytest.raises(ExactOnlineReauthorizationRequired, match="not sent again"):
        make_manager(store).access_token()  # a later process: not even the lock is taken
    assert store.events == [] and len(refresh_grants(fake)) == 1

    clock.advance(1)
    fresh = authorized_state(fake, clock)  # the user re-authorizes: new pair, no last_error
    store.save(fresh)
    assert waiter.access_token() == fresh.access_token
    clock.advance(600)
    assert waiter.access_token() == fake.current_access_token != fresh.access_token  # the new chain rotates
    assert [c.outcome for c in refresh_grants(fake)][1:] == ["ok"]


def test_every_reauthorization_error_carries_the_mark_the_stores_are_checked_for() -> None:
    from airflow_provider_exactonline.auth.token_manager import REAUTHORIZATION_MARK

    assert REAUTHORIZATION_MARK in ExactOnlineReauthorizationRequired("c", "d").message


def test_no_writable_store_refuses_to_refresh_before_calling_exact(fake, clock, make_manager) -> None:
    class ReadOnly(InMemoryTokenStore):
        read_only = True

    state = authorized_state(fake, clock)
    manager = make_manager(ReadOnly(state, name="secrets-manager"))
    assert manager.access_token() == state.access_token  # a valid token needs no store
    clock.advance(600)
    with pytest.raises(ExactOnlineConfigError, match=r"no writable token store \(stores: secrets-manager\)"):
        manager.access_token()
    assert refresh_grants(fake) == [] and manager.token_calls == 0  # the refresh token is still alive


def test_old_refresh_token_used_picks_up_the_concurrent_writers_pair(fake, clock, make_manager) -> None:
    state = authorized_state(fake, clock)
    clock.advance(700)
    winner_store, loser_store = InMemoryTokenStore(state), InMemoryTokenStore(state)
    make_manager(winner_store).access_token()  # a process that did not honour our lock rotated the pair

    def concurrent_save() -> None:
        time.sleep(0.3)
        loser_store.save(winner_store.load())

    saver = threading.Thread(target=concurrent_save)
    saver.start()
    loser = make_manager(loser_store, reuse_poll_seconds=5)
    assert loser.access_token() == fake.current_access_token
    saver.join()
    assert fake.refresh_errors == {"old_refresh_token": 1}


def test_expired_refresh_token_requires_reauthorization(clock, make_manager) -> None:
    from airflow_provider_exactonline.testing import FakeExactOnline

    with FakeExactOnline(clock=clock, refresh_token_lifetime=1000) as fake:
        config = ExactOnlineConfig("exact_test", fake.base_url, fake.client_id, fake.client_secret)
        manager = TokenManager(config, [InMemoryTokenStore(authorized_state(fake, clock))], clock=clock)
        clock.advance(2000)
        with pytest.raises(ExactOnlineReauthorizationRequired, match="refresh token expired"):
            manager.access_token()
        assert fake.refresh_errors == {"refresh_token_expired": 1}


def test_missing_refresh_token_requires_reauthorization(fake, clock, make_manager) -> None:
    manager = make_manager(InMemoryTokenStore(TokenState("a-token", None, clock.time() - 1, clock.time() - 601)))
    with pytest.raises(ExactOnlineReauthorizationRequired, match="no refresh token"):
        manager.access_token()
    with pytest.raises(ExactOnlineReauthorizationRequired):
        make_manager(InMemoryTokenStore()).access_token()
    assert fake.token_calls == []


def test_too_early_answer_keeps_the_valid_token(fake, clock, make_manager) -> None:
    state = authorized_state(fake, clock)
    # A window 5x wider than Exact's makes us early on purpose (as clock skew would).
    manager = make_manager(InMemoryTokenStore(state), window_safety=5.0)
    clock.advance(500)
    assert manager.access_token() == state.access_token
    assert fake.refresh_errors == {"too_early": 1}
    assert manager.access_token() == state.access_token  # backs off: no second too-early call
    assert fake.refresh_errors == {"too_early": 1}


def test_too_early_answer_uses_the_pair_another_process_saved(fake, clock, make_manager) -> None:
    state = authorized_state(fake, clock)
    store = RacingStore(state)
    manager = make_manager(store)
    clock.advance(590)

    # Another process refreshed without our lock; then we (still holding the old pair) try too.
    other_state = TokenState.from_token_response(
        requests.post(
            fake.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": state.refresh_token,
                "client_id": fake.client_id,
                "client_secret": fake.client_secret,
            },
            timeout=10,
        ).json(),
        clock.time(),
    )
    store.during_wait = lambda: None
    manager._state = state

    # our refresh with the old token is answered "Old refresh token used"; the stores are polled
    threading.Timer(0.2, store.save, args=(other_state,)).start()
    assert manager.access_token() == other_state.access_token


def test_wrong_client_secret_names_the_field(fake, clock, config, make_manager) -> None:
    from dataclasses import replace

    state = authorized_state(fake, clock)
    manager = TokenManager(replace(config, client_secret="wrong-secret-123"), [InMemoryTokenStore(state)], clock=clock)
    clock.advance(700)
    with pytest.raises(ExactOnlineAuthError, match=r"'Client secret' \(password\)") as caught:
        manager.access_token()
    assert not isinstance(caught.value, ExactOnlineReauthorizationRequired)
    assert "wrong-secret-123" not in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_token_call_retried_only_when_it_never_reached_the_server(clock) -> None:
    config = ExactOnlineConfig("exact_test", f"http://127.0.0.1:{_closed_port()}", "cid", "secret-value")
    state = TokenState("a-token", "r-token", clock.time() - 1, clock.time() - 601)
    session = requests.Session()
    attempts = []
    original = session.send

    def counting_send(request, **kwargs):
        attempts.append(request.url)
        return original(request, **kwargs)

    session.send = counting_send  # type: ignore[method-assign]
    manager = TokenManager(config, [InMemoryTokenStore(state)], clock=clock, connect_retries=2, connect_retry_wait=0.01)
    with pytest.raises(ExactOnlineAuthError, match="could not connect"):
        manager.access_token()
    assert manager.token_calls == 0  # nothing reached a server


def test_read_timeout_is_not_retried(fake, clock, make_manager) -> None:
    state = authorized_state(fake, clock)
    manager = make_manager(InMemoryTokenStore(state), token_timeout=0.3)
    fake.set_token_delay(1.0)
    clock.advance(700)
    with pytest.raises(ExactOnlineAuthError, match="may have rotated"):
        manager.access_token()
    time.sleep(1.0)  # let the fake finish the (rotated!) call
    assert len(refresh_grants(fake)) == 1 and manager.token_calls == 1


def test_never_reached_server_classification() -> None:
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

    refused = requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused")))
    dropped = requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))
    assert never_reached_server(refused)
    assert never_reached_server(requests.ConnectTimeout())
    assert not never_reached_server(dropped)
    assert not never_reached_server(requests.ReadTimeout())


# --- 401 from the API --------------------------------------------------------------------------
def test_on_unauthorized(fake, clock, make_manager) -> None:
    first = authorized_state(fake, clock)
    store = InMemoryTokenStore(first)
    manager = make_manager(store)
    assert manager.access_token() == first.access_token
    clock.advance(1)
    second = authorized_state(fake, clock)  # re-authorized elsewhere: first access token is dead
    store.save(second)
    assert manager.on_unauthorized(first.access_token) == second.access_token
    with pytest.raises(ExactOnlineAuthError, match="re-authorize"):
        manager.on_unauthorized(second.access_token)  # valid per its expiry, yet refused
    clock.advance(600)
    assert manager.on_unauthorized(second.access_token) == fake.current_access_token  # expired: refresh


# --- authorization-code flow against the fake's real endpoints ----------------------------------
def _authorize(config, state: str = "xyz") -> str:
    url = authorization_url(config, state)
    response = requests.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("http://127.0.0.1/callback?") and "state=xyz" in location
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(location).query)["code"][0]


def test_authorization_url_and_exchange_code(fake, config, clock) -> None:
    url = authorization_url(config, "xyz", force_login=True)
    assert url.startswith(f"{fake.base_url}/api/oauth2/auth?") and "force_login=1" in url
    assert "client_id=fake-client-id" in url and "response_type=code" in url
    state = exchange_code(config, _authorize(config), clock=clock)
    assert state.access_token == fake.current_access_token
    assert state.expires_at - state.obtained_at == 600


def test_exchange_code_errors_carry_exacts_message(fake, config) -> None:
    code = _authorize(config)
    exchange_code(config, code)
    with pytest.raises(ExactOnlineAuthError, match="Invalid or used code") as caught:
        exchange_code(config, code)
    assert caught.value.status_code == 400
    from dataclasses import replace

    with pytest.raises(ExactOnlineAuthError, match="Client secret"):
        exchange_code(replace(config, client_secret="nope-nope"), _authorize(config))


# --- secrets never logged ---------------------------------------------------------------------
def test_no_token_or_secret_in_logs(fake, clock, config, caplog, make_manager) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("requests_oauthlib", "oauthlib", "urllib3", "airflow_provider_exactonline"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    first = exchange_code(config, _authorize(config), clock=clock)
    store = InMemoryTokenStore(first)
    manager = make_manager(store)
    clock.advance(600)
    second = manager.access_token()
    from dataclasses import replace

    with pytest.raises(ExactOnlineAuthError):
        TokenManager(replace(config, client_secret="another-bad-secret"), [store], clock=clock).on_unauthorized(second)
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "requests_oauthlib" in {r.name.split(".")[0] for r in caplog.records}  # we did capture its debug output
    secrets = [first.access_token, first.refresh_token, second, store.load().refresh_token, config.client_secret]
    for secret in secrets:
        assert secret and secret not in text
