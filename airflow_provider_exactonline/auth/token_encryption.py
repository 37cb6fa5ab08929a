"""Encryption at rest for token values kept in Airflow Variables.

At ``logging_level = DEBUG`` the Task SDK supervisor logs every Variable write with its value, and
anyone allowed to read Variables can read them, so a token pair must never sit there in clear. The key
is derived from the connection's client secret (which every process that may refresh already holds)
with HKDF/SHA-256 and the fixed context string :data:`KEY_CONTEXT`; the value is a Fernet token.
Not yet wired into the Variable store (see docs/tokens.md).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from airflow_provider_exactonline.exceptions import ExactOnlineReauthorizationRequired

#: HKDF ``info``: changing it makes every stored value unreadable, so it is versioned and fixed.
KEY_CONTEXT = b"airflow-provider-exactonline token variable v1"
#: Marker key of an encrypted Variable value (``{"fernet": "<token>"}``).
ENCRYPTED_KEY = "fernet"


class TokenValueUndecryptable(ExactOnlineReauthorizationRequired):
    """The stored value was encrypted with another client secret; it is kept, never overwritten silently."""


def fernet_for(client_secret: str) -> Fernet:
    if not client_secret:
        raise ValueError("a client secret is needed to derive the token encryption key")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_CONTEXT).derive(client_secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_json(data: dict[str, Any], client_secret: str) -> str:
    """``data`` as the JSON text ``{"fernet": ...}``, safe to log and to show in the Variables list."""
    token = fernet_for(client_secret).encrypt(json.dumps(data).encode()).decode()
    return json.dumps({ENCRYPTED_KEY: token})


def is_encrypted(raw: str) -> bool:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get(ENCRYPTED_KEY), str)


def decrypt_json(raw: str, client_secret: str, conn_id: str) -> dict[str, Any]:
    """The dict ``encrypt_json`` wrote; plaintext JSON (older versions) is returned as is."""
    parsed = json.loads(raw)
    if not (isinstance(parsed, dict) and isinstance(parsed.get(ENCRYPTED_KEY), str)):
        return parsed if isinstance(parsed, dict) else {}
    try:
        plain = fernet_for(client_secret).decrypt(parsed[ENCRYPTED_KEY].encode())
    except InvalidToken:
        raise TokenValueUndecryptable(
            conn_id,
            "the stored token pair was encrypted with a different client secret (was the connection's password "
            "changed?); restore the old secret or re-authorize the connection",
        ) from None
    data = json.loads(plain)
    return data if isinstance(data, dict) else {}
