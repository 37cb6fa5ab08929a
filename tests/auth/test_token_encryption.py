"""Token values encrypted for Variables: no token in the stored text, typed error on a changed secret."""

from __future__ import annotations

import json

import pytest

from airflow_provider_exactonline.auth.token_encryption import (
    TokenValueUndecryptable,
    decrypt_json,
    encrypt_json,
    is_encrypted,
)
from airflow_provider_exactonline.exceptions import ExactOnlineReauthorizationRequired

PAIR = {"access_token": "access-AAAA-1234567", "refresh_token": "refresh-BBBB-7654321", "expires_at": 1.0}


def test_encrypted_text_holds_no_token_and_round_trips() -> None:
    raw = encrypt_json(PAIR, "client-secret-1")
    assert "access-AAAA" not in raw and "refresh-BBBB" not in raw
    assert is_encrypted(raw)
    assert decrypt_json(raw, "client-secret-1", "c") == PAIR


def test_plaintext_from_older_versions_is_read() -> None:
    raw = json.dumps(PAIR)
    assert not is_encrypted(raw)
    assert decrypt_json(raw, "client-secret-1", "c") == PAIR


def test_changed_client_secret_gives_typed_error_naming_the_fix() -> None:
    raw = encrypt_json(PAIR, "client-secret-1")
    with pytest.raises(TokenValueUndecryptable) as info:
        decrypt_json(raw, "client-secret-2", "exact_x")
    assert isinstance(info.value, ExactOnlineReauthorizationRequired)
    assert "re-authorize" in str(info.value) and "exact_x" in str(info.value)
