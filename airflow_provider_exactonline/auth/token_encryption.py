"""Encryption at rest for the token pair kept in Airflow Variables.

At ``logging_level = DEBUG`` the Task SDK supervisor logs every Variable write with its value, and
anyone allowed to read Variables sees them, so the pair is stored as a Fernet token. The key is
derived with HKDF-SHA256 from the connection's client secret (which every process that may refresh
holds anyway) and bound to the conn_id through the HKDF ``info`` string
``KEY_INFO + b":" + conn_id``. See docs/tokens.md.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError, ExactOnlineReauthorizationRequired

KEY_INFO = b"airflow-provider-exactonline/token-variable/v1"
ENVELOPE_VERSION = 1


def derive_key(client_secret: str, conn_id: str) -> bytes:
    """The Fernet key (urlsafe base64 of 32 bytes) for this connection's token Variable."""
    if not client_secret:
        raise ExactOnlineConfigError(
            f"Connection {conn_id!r} has no client secret (password), so its token Variable cannot be encrypted; "
            f"set the app's client secret as the connection's password."
        )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO + b":" + conn_id.encode())
    return base64.urlsafe_b64encode(hkdf.derive(client_secret.encode()))


def encrypt_payload(payload: dict[str, Any], client_secret: str, conn_id: str) -> str:
    """``{"v": 1, "fernet": "..."}``: the JSON of ``payload`` encrypted; safe to log."""
    token = Fernet(derive_key(client_secret, conn_id)).encrypt(json.dumps(payload).encode())
    return json.dumps({"v": ENVELOPE_VERSION, "fernet": token.decode()})


def is_encrypted(value: Any) -> bool:
    return isinstance(value, dict) and "fernet" in value


def decrypt_payload(raw: str, client_secret: str, conn_id: str) -> dict[str, Any] | None:
    """The stored dict from a Variable value, encrypted or (written by an older version) plaintext JSON.

    Raises :class:`ExactOnlineReauthorizationRequired` when the value was encrypted with another key
    (the client secret changed): the stored pair is unreadable, so a person must authorize again.
    Returns None for a value that is not JSON at all.
    """
    try:
        outer = json.loads(raw)
    except ValueError:
        return None
    if not is_encrypted(outer):
        return outer if isinstance(outer, dict) else None  # plaintext: rewritten encrypted on the next save
    try:
        plain = Fernet(derive_key(client_secret, conn_id)).decrypt(str(outer["fernet"]).encode())
    except InvalidToken:
        raise ExactOnlineReauthorizationRequired(
            conn_id,
            "the token pair stored in the Airflow Variable cannot be decrypted with the connection's current "
            "client secret (was the secret changed?)",
        ) from None
    data = json.loads(plain)
    return data if isinstance(data, dict) else None


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
