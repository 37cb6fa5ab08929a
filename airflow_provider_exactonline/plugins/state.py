"""OAuth ``state`` for the UI flow: random, single-use, short-lived, bound to one connection and one user.

Why it is stored where it is: the api-server may run several workers (and several hosts) and its
``[api] secret_key`` may be unset (then every worker invents its own), so neither process memory nor an
HMAC key is shared reliably. The metadata DB is. The pending authorization is therefore kept in the
connection's own extras, under the key ``oauth_pending``::

    {"oauth_pending": {"<sha256 of state>": {"user": "admin", "redirect_uri": "...",
                                             "created_at": 1700000000.0, "expires_at": 1700000600.0,
                                             "embedded": true}}}

* ``state`` = ``<conn_id, base64url>.<32 random bytes, base64url>``; the conn id part only says which row to
  look in. Only the SHA-256 of the state is stored, so reading the extras does not reveal a usable state.
* Issuing and consuming happen in a transaction that locks the connection row with the token store's lock
  (``SELECT ... FOR UPDATE`` with a lock timeout; on SQLite its per-connection lock file), so two workers
  cannot both consume one state.
* The callback consumes the record *before* exchanging the code: a replay finds nothing (400), even if the
  exchange then fails. Expired records are pruned on every write; at most :data:`MAX_PENDING` are kept.
* A forged or unknown state writes nothing; a state presented by another user is rejected and left alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

PENDING_KEY = "oauth_pending"
#: Seconds the user has to log in at Exact and approve (Exact's own code then lives ~3 minutes).
STATE_TTL_S = 600.0
MAX_PENDING = 5

_STATE_RE = re.compile(r"^([A-Za-z0-9_-]{1,400})\.([A-Za-z0-9_-]{43})$")


class StateError(Exception):
    """The ``state`` is malformed, unknown, already used, expired or belongs to another user (HTTP 400)."""


@dataclass(frozen=True)
class PendingAuthorization:
    conn_id: str
    user_id: str
    redirect_uri: str
    created_at: float
    expires_at: float
    embedded: bool = False  # started from the page inside Airflow's UI: the callback returns there


def _b64encode(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).rstrip(b"=").decode()


def _b64decode(value: str) -> str:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()


def new_state(conn_id: str) -> str:
    return f"{_b64encode(conn_id)}.{secrets.token_urlsafe(32)}"


def conn_id_from_state(state: str | None) -> str:
    match = _STATE_RE.match(state or "")
    if not match:
        raise StateError("The 'state' parameter is missing or malformed.")
    try:
        return _b64decode(match.group(1))
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise StateError("The 'state' parameter is malformed.") from err


def state_digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


@contextmanager
def locked_connection(conn_id: str) -> Iterator[Any]:
    """Yield the ORM ``Connection`` row locked for update (or None); commits on clean exit.

    The token store's row lock (:meth:`ConnectionExtrasTokenStore.locked_row`), so pending states, the
    division and token rotations exclude each other, and a stuck holder ends in an error, not a hang.
    """
    from airflow_provider_exactonline.auth.token_stores import ConnectionExtrasTokenStore

    with ConnectionExtrasTokenStore(conn_id).locked_row() as (_session, conn):
        yield conn


def _live_records(extras: dict[str, Any], now: float) -> dict[str, dict[str, Any]]:
    pending = extras.get(PENDING_KEY)
    if not isinstance(pending, dict):
        return {}
    live = {}
    for digest, record in pending.items():
        if isinstance(record, dict):
            try:
                if float(record.get("expires_at", 0)) > now:
                    live[digest] = record
            except (TypeError, ValueError):
                continue
    return live


def _write_pending(conn: Any, extras: dict[str, Any], pending: dict[str, dict[str, Any]]) -> None:
    if pending:
        extras[PENDING_KEY] = pending
    else:
        extras.pop(PENDING_KEY, None)
    conn.set_extra(json.dumps(extras))


def issue_state(
    conn_id: str,
    user_id: str,
    redirect_uri: str,
    *,
    now: float | None = None,
    ttl: float = STATE_TTL_S,
    embedded: bool = False,
) -> str:
    """Record a pending authorization for ``conn_id`` by ``user_id`` and return its ``state``.

    Raises ``LookupError`` when the connection is not in the metadata DB.
    """
    now = time.time() if now is None else now
    state = new_state(conn_id)
    with locked_connection(conn_id) as conn:
        if conn is None:
            raise LookupError(conn_id)
        extras = dict(conn.extra_dejson)
        pending = _live_records(extras, now)
        # Keep the newest MAX_PENDING - 1 so a forgotten browser tab cannot grow the extras without bound.
        newest = sorted(pending.items(), key=lambda item: float(item[1].get("created_at", 0)), reverse=True)
        pending = dict(newest[: MAX_PENDING - 1])
        pending[state_digest(state)] = {
            "user": user_id,
            "redirect_uri": redirect_uri,
            "created_at": now,
            "expires_at": now + ttl,
            "embedded": embedded,
        }
        _write_pending(conn, extras, pending)
    return state


def consume_state(state: str | None, user_id: str, *, now: float | None = None) -> PendingAuthorization:
    """Check ``state`` and remove its record (single use). Raises :class:`StateError`; then nothing was written."""
    now = time.time() if now is None else now
    conn_id = conn_id_from_state(state)
    assert state is not None
    digest = state_digest(state)
    with locked_connection(conn_id) as conn:
        if conn is None:
            raise StateError("The 'state' does not belong to any connection.")
        extras = dict(conn.extra_dejson)
        raw = extras.get(PENDING_KEY)
        record = raw.get(digest) if isinstance(raw, dict) else None
        if not isinstance(record, dict):
            raise StateError("This authorization request is unknown or was already used. Start again with Connect.")
        if str(record.get("user")) != str(user_id):
            raise StateError("This authorization request was started by another Airflow user.")
        pending = _live_records(extras, now)
        pending.pop(digest, None)
        _write_pending(conn, extras, pending)
        expires_at = float(record.get("expires_at", 0))
    if expires_at <= now:
        raise StateError("This authorization request has expired. Start again with Connect.")
    return PendingAuthorization(
        conn_id=conn_id,
        user_id=str(user_id),
        redirect_uri=str(record.get("redirect_uri") or ""),
        created_at=float(record.get("created_at", 0)),
        expires_at=expires_at,
        embedded=record.get("embedded") is True,
    )


def save_division(conn_id: str, division: int, division_name: str | None) -> None:
    """Merge ``division`` / ``division_name`` into the extras under the row lock (other keys untouched)."""
    with locked_connection(conn_id) as conn:
        if conn is None:
            raise LookupError(conn_id)
        extras = dict(conn.extra_dejson)
        extras["division"] = division
        if division_name:
            extras["division_name"] = division_name
        else:
            extras.pop("division_name", None)
        conn.set_extra(json.dumps(extras))
