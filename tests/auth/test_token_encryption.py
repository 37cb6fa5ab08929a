"""Token values encrypted for Variables: no token in the stored text, typed error on a changed secret."""

from __future__ import annotations

import json

import pytest

from airflow_provider_exactonline.auth import InMemoryTokenStore, TokenManager, TokenState, VariableTokenStore
from airflow_provider_exactonline.auth.token_encryption import (
    TokenValueUndecryptable,
    decrypt_json,
    encrypt_json,
    is_encrypted,
)
from airflow_provider_exactonline.exceptions import ExactOnlineReauthorizationRequired

from .conftest import authorized_state

PAIR = {"access_token": "access-AAAA-1234567", "refresh_token": "refresh-BBBB-7654321", "expires_at": 1.0}


def test_encrypted_text_holds_no_token_and_round_trips() -> None:
    raw = encrypt_json(PAIR, "client-secret-1", "c")
    assert "access-AAAA" not in raw and "refresh-BBBB" not in raw
    assert is_encrypted(raw)
    assert decrypt_json(raw, "client-secret-1", "c") == PAIR


def test_plaintext_from_older_versions_is_read() -> None:
    raw = json.dumps(PAIR)
    assert not is_encrypted(raw)
    assert decrypt_json(raw, "client-secret-1", "c") == PAIR


def test_changed_client_secret_gives_typed_error_naming_the_fix() -> None:
    raw = encrypt_json(PAIR, "client-secret-1", "c")
    with pytest.raises(TokenValueUndecryptable) as info:
        decrypt_json(raw, "client-secret-2", "c")
    assert isinstance(info.value, ExactOnlineReauthorizationRequired)
    assert "re-authorize" in str(info.value) and "'c'" in str(info.value)


def test_key_is_bound_to_the_conn_id() -> None:
    raw = encrypt_json(PAIR, "client-secret-1", "exact_a")
    with pytest.raises(TokenValueUndecryptable):
        decrypt_json(raw, "client-secret-1", "exact_b")


# --- the Variable store -----------------------------------------------------------------------------
class DictVariables:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value


def test_variable_store_writes_the_pair_encrypted() -> None:
    backend = DictVariables()
    store = VariableTokenStore("exact_a", backend=backend, client_secret="secret-1", settle_delay=0.01)
    state = TokenState("access-AAAA-1234567", "refresh-BBBB-7654321", 1600.0, 1000.0)
    with store.lock():
        store.save(state)
    raw = backend.values["exactonline_token__exact_a"]
    assert "access-AAAA" not in raw and "refresh-BBBB" not in raw
    assert json.loads(raw)["v"] == 1 and json.loads(raw)["obtained_at"] == 1000.0
    assert store.load() == state
    lease = backend.values["exactonline_lease__exact_a"]  # the lease holds only an owner id and a time
    assert set(json.loads(lease)) == {"owner", "expires_at"} and "AAAA" not in lease


def test_plaintext_variable_is_read_then_rewritten_encrypted_on_the_next_save() -> None:
    backend = DictVariables()
    backend.values["exactonline_token__exact_a"] = json.dumps(PAIR | {"obtained_at": 5.0})
    store = VariableTokenStore("exact_a", backend=backend, client_secret="secret-1")
    loaded = store.load()
    assert loaded is not None and loaded.refresh_token == PAIR["refresh_token"]
    store.save(loaded)
    raw = backend.values["exactonline_token__exact_a"]
    assert is_encrypted(raw) and "refresh-BBBB" not in raw
    assert store.load() == loaded


def test_changed_secret_stops_the_manager_and_keeps_the_stored_pair(fake, clock, config) -> None:
    backend = DictVariables()
    old = VariableTokenStore(config.conn_id, backend=backend, client_secret="the-old-secret", settle_delay=0.01)
    old.save(authorized_state(fake, clock))
    before = backend.values["exactonline_token__exact_test"]
    store = VariableTokenStore(config.conn_id, backend=backend, client_secret=config.client_secret, settle_delay=0.01)
    manager = TokenManager(config, [store], clock=clock)
    clock.advance(600)
    with pytest.raises(TokenValueUndecryptable) as info:
        manager.access_token()
    assert "re-authorize" in str(info.value)
    assert backend.values["exactonline_token__exact_test"] == before  # never overwritten
    assert [c for c in fake.token_calls if c.grant_type == "refresh_token"] == []


def test_a_newer_authorization_replaces_a_pair_it_cannot_read(fake, clock, config) -> None:
    backend = DictVariables()
    old = VariableTokenStore(config.conn_id, backend=backend, client_secret="the-old-secret", settle_delay=0.01)
    old.save(authorized_state(fake, clock))
    clock.advance(5)
    reauthorized = InMemoryTokenStore(authorized_state(fake, clock), name="connection")
    store = VariableTokenStore(config.conn_id, backend=backend, client_secret=config.client_secret, settle_delay=0.01)
    manager = TokenManager(config, [reauthorized, store], clock=clock)
    clock.advance(600)
    token = manager.access_token()  # refreshes the re-authorized pair and saves it to both stores
    assert token == fake.current_access_token
    saved = store.load()
    assert saved is not None and saved.access_token == token
