"""Encryption at rest for the token pair kept in Airflow Variables.

At ``logging_level = DEBUG`` the Task SDK supervisor logs every Variable write with its value, and
anyone allowed to read Variables can read them, so a token pair never sits there in clear. The key is
derived from the connection's client secret (which every process that may refresh already holds) with
HKDF/SHA-256, ``info`` = :data:`KEY_CONTEXT` + ``b":"`` + conn_id; the value is a Fernet token in the
envelope ``{"v": 1, "fernet": "..."}``. See docs/tokens.md.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError, ExactOnlineReauthorizationRequired

#: HKDF ``info`` prefix: changing it makes every stored value unreadable, so it is versioned and fixed.
KEY_CONTEXT = b"airflow-provider-exactonline token variable v1"
#: Marker key of an encrypted Variable value.
ENCRYPTED_KEY = "fernet"
ENVELOPE_VERSION = 1


class TokenValueUndecryptable(ExactOnlineReauthorizationRequired):
    """The stored value was encrypted with another client secret; it is kept, never overwritten silently.

    ``obtained_at`` (stored in clear, not secret) lets the TokenManager tell whether a readable pair is
    newer - a re-authorization after the secret changed - and may replace it.
    """

    obtained_at: float | None = None


def fernet_for(client_secret: str, conn_id: str) -> Fernet:
    if not client_secret:
        raise ExactOnlineConfigError(
            f"Connection {conn_id!r} has no client secret (password), so its token Variable cannot be "
            f"encrypted or read; set the Exact app's client secret as the connection's password."
        )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_CONTEXT + b":" + conn_id.encode())
    return Fernet(base64.urlsafe_b64encode(hkdf.derive(client_secret.encode())))


def encrypt_json(data: dict[str, Any], client_secret: str, conn_id: str, *, clear: dict[str, Any] | None = None) -> str:
    """``data`` as the JSON text ``{"v": 1, **clear, "fernet": ...}``, safe to log and to show in the Variables
    list. ``clear``: fields kept readable beside the ciphertext; never put a secret there."""
    token = fernet_for(client_secret, conn_id).encrypt(json.dumps(data).encode()).decode()
    return json.dumps({"v": ENVELOPE_VERSION, **(clear or {}), ENCRYPTED_KEY: token})


def is_encrypted(raw: str) -> bool:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get(ENCRYPTED_KEY), str)


def decrypt_json(raw: str, client_secret: str, conn_id: str) -> dict[str, Any]:
    """The dict ``encrypt_json`` wrote; plaintext JSON (older versions) is returned as is.

    Raises ``ValueError`` for text that is not JSON and :class:`TokenValueUndecryptable` for a value
    encrypted with another client secret.
    """
    parsed = json.loads(raw)
    if not (isinstance(parsed, dict) and isinstance(parsed.get(ENCRYPTED_KEY), str)):
        return parsed if isinstance(parsed, dict) else {}
    try:
        plain = fernet_for(client_secret, conn_id).decrypt(parsed[ENCRYPTED_KEY].encode())
    except InvalidToken:
        err = TokenValueUndecryptable(
            conn_id,
            "the token pair stored in its Airflow Variable was encrypted with a different client secret (was the "
            "connection's password changed?); restore the old secret or re-authorize the connection",
        )
        obtained = parsed.get("obtained_at")
        err.obtained_at = float(obtained) if isinstance(obtained, (int, float)) else None
        raise err from None
    data = json.loads(plain)
    return data if isinstance(data, dict) else {}


def client_secret_of(conn_id: str) -> str:
    """The connection's client secret (password), looked up the way this process can (Task SDK or ORM)."""
    from airflow_provider_exactonline.auth import process_context

    if process_context.process_kind() == process_context.TASK_SDK:
        from airflow.sdk import Connection

        password = Connection.get(conn_id).password
    else:
        from airflow.models import Connection as OrmConnection

        password = OrmConnection.get_connection_from_secrets(conn_id).password
    return password or ""
