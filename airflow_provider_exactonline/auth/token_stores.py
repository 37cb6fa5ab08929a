"""Where the rotating token pair lives, and the cross-process lock that guards its rotation.

Exact's refresh tokens are single-use, so two processes must never refresh at once. Each store
offers ``lock()`` (exclusive across processes) and the holder re-reads with ``load()`` after taking
it. See docs/tokens.md for which store is used where and why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from airflow_provider_exactonline.auth import process_context
from airflow_provider_exactonline.auth.masking import mask
from airflow_provider_exactonline.auth.token_encryption import client_secret_of, decrypt_json, encrypt_json
from airflow_provider_exactonline.auth.token_state import EXTRA_LAST_ERROR, TokenState
from airflow_provider_exactonline.exceptions import ExactOnlineAuthError, ExactOnlineConfigError

log = logging.getLogger(__name__)

TOKEN_VARIABLE_PREFIX = "exactonline_token__"
LEASE_VARIABLE_PREFIX = "exactonline_lease__"


@runtime_checkable
class TokenStore(Protocol):
    """What the TokenManager needs from a store. Implement this for a custom store (e.g. a secrets manager).

    * ``load()`` returns the stored state or None; it must read fresh (no caching).
    * ``save(state)`` persists it; inside ``lock()`` it must be durable before the lock is released.
    * ``lock()`` is exclusive across every process that may refresh this connection. It may raise
      :class:`StoreStateChanged` while waiting, meaning "someone saved a new state; re-read instead".
    * Optional attribute ``read_only = True``: the manager only loads from it (never locks or saves).
    """

    name: str

    def load(self) -> TokenState | None: ...

    def save(self, state: TokenState) -> None: ...

    def lock(self) -> AbstractContextManager[None]: ...


class StoreStateChanged(Exception):
    """Raised by ``lock()`` while waiting: a newer state was saved, so re-read rather than lock."""


def is_read_only(store: Any) -> bool:
    return bool(getattr(store, "read_only", False))


def _conf_float(key: str, default: float) -> float:
    """``[exactonline] key`` from Airflow config (env ``AIRFLOW__EXACTONLINE__KEY``), else the default."""
    env = os.environ.get(f"AIRFLOW__EXACTONLINE__{key.upper()}")
    if env:
        try:
            return float(env)
        except ValueError:
            raise ExactOnlineConfigError(f"AIRFLOW__EXACTONLINE__{key.upper()} must be a number, got {env!r}") from None
    try:
        from airflow.configuration import conf

        return conf.getfloat("exactonline", key, fallback=default)
    except Exception:
        return default


# ------------------------------------------------------------------------------------------------
class InMemoryTokenStore:
    """For tests and single-process scripts. ``lock`` is a process-local ``threading.Lock``."""

    name = "memory"

    def __init__(self, state: TokenState | None = None, name: str = "memory") -> None:
        self._state = state
        self._lock = threading.Lock()
        self.name = name
        self.saves = 0

    def load(self) -> TokenState | None:
        return self._state

    def save(self, state: TokenState) -> None:
        self._state = state
        self.saves += 1

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield


# ------------------------------------------------------------------------------------------------
class ConnectionExtrasTokenStore:
    """Token keys in the connection's extras in the metadata DB, for processes allowed to use the ORM.

    ``lock()`` opens a transaction holding ``SELECT ... FOR UPDATE`` on the connection row (PostgreSQL,
    MySQL). ``save()`` inside the lock writes through that same transaction, which commits when the lock
    is released, so the new pair is durable before anyone else can take the lock. On SQLite (single
    machine by nature) the lock is an ``flock`` on a file beside the database file.

    ``save()`` merges the token keys into the extras and never drops other keys.
    """

    name = "connection-extras"

    def __init__(self, conn_id: str, *, lock_timeout: float | None = None) -> None:
        self.conn_id = conn_id
        self.lock_timeout = lock_timeout if lock_timeout is not None else _conf_float("token_lock_timeout", 300.0)
        self._local = threading.local()

    # -- helpers
    @staticmethod
    def _session_factory() -> Any:
        from airflow import settings

        if getattr(settings, "NonScopedSession", None) is None:
            settings.configure_orm()
        # Not the scoped Session: other code in this thread (e.g. Variable.set) commits the scoped
        # session, which would end our row lock early.
        return settings.NonScopedSession

    def _select(self, session: Any, *, for_update: bool) -> Any:
        from airflow.models import Connection
        from sqlalchemy import select

        stmt = select(Connection).where(Connection.conn_id == self.conn_id)
        if for_update:
            stmt = stmt.with_for_update()
        return session.scalars(stmt.execution_options(populate_existing=True)).first()

    @staticmethod
    def _extras(conn: Any) -> dict[str, Any]:
        try:
            extras = conn.extra_dejson
        except Exception:
            extras = {}
        return dict(extras) if isinstance(extras, dict) else {}

    def exists(self) -> bool:
        Session = self._session_factory()
        session = Session()
        try:
            return self._select(session, for_update=False) is not None
        finally:
            session.close()

    # -- protocol
    def load(self) -> TokenState | None:
        session = getattr(self._local, "session", None)
        if session is not None:
            conn = self._select(session, for_update=False)
            state = TokenState.from_extras(self._extras(conn)) if conn is not None else None
        else:
            Session = self._session_factory()
            session = Session()
            try:
                conn = self._select(session, for_update=False)
                state = TokenState.from_extras(self._extras(conn)) if conn is not None else None
            finally:
                session.rollback()
                session.close()
        if state is not None:
            mask(state.access_token, state.refresh_token)
        return state

    def _merge_into(self, conn: Any, state: TokenState) -> None:
        extras = self._extras(conn)
        for key, value in state.to_extras().items():
            if value is None and key == EXTRA_LAST_ERROR:
                extras.pop(key, None)
            else:
                extras[key] = value
        conn.set_extra(json.dumps(extras))

    def save(self, state: TokenState) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            conn = self._select(session, for_update=False)
            if conn is None:
                raise ExactOnlineConfigError(f"Connection {self.conn_id!r} disappeared from the metadata DB")
            self._merge_into(conn, state)
            session.flush()
            if session.get_bind().dialect.name == "sqlite":
                # SQLite has one writer at a time: commit now (the file lock still excludes other
                # refreshers) so the Variable mirror, written next in another session, is not blocked.
                session.commit()
            self._local.saved = True
            return
        with self.lock():
            self.save(state)

    @contextlib.contextmanager
    def locked_row(self) -> Iterator[tuple[Any, Any]]:
        """Yield ``(session, row)``: the ORM ``Connection`` row (None when it is not in the DB) locked for
        update in a transaction of its own, committed on a clean exit and rolled back on an exception.

        The one row lock for everything that writes this connection's extras (tokens, the UI's pending
        OAuth states, the division): ``SELECT ... FOR UPDATE`` with PostgreSQL ``lock_timeout`` / MySQL
        ``innodb_lock_wait_timeout`` set to ``lock_timeout``; on SQLite an ``flock`` on a file beside the DB.
        Waiting longer raises :class:`ExactOnlineAuthError` instead of hanging.
        """
        Session = self._session_factory()
        session = Session()
        file_lock: Any = None
        try:
            dialect = session.get_bind().dialect.name
            if dialect == "postgresql":
                session.execute(_text(f"SET LOCAL lock_timeout = '{int(self.lock_timeout * 1000)}ms'"))
            elif dialect == "mysql":
                session.execute(_text(f"SET SESSION innodb_lock_wait_timeout = {max(1, int(self.lock_timeout))}"))
            elif dialect == "sqlite":
                file_lock = _SqliteFileLock(session.get_bind().url.database, self.conn_id, self.lock_timeout)
                file_lock.acquire()
            try:
                conn = self._select(session, for_update=True)
            except Exception as err:
                if "lock" in str(err).lower() and "timeout" in str(err).lower():
                    raise ExactOnlineAuthError(
                        f"Connection {self.conn_id!r}: could not lock the connection row within "
                        f"{self.lock_timeout:.0f} s (another process is refreshing the Exact Online token and "
                        f"seems stuck)"
                    ) from err
                raise
            yield session, conn
            session.commit()
        except BaseException:
            session.rollback()  # a no-op after lock() committed a saved pair
            raise
        finally:
            if file_lock is not None:
                file_lock.release()
            session.close()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        if getattr(self._local, "session", None) is not None:
            raise RuntimeError("ConnectionExtrasTokenStore.lock() is not re-entrant")
        with self.locked_row() as (session, conn):
            if conn is None:
                raise ExactOnlineConfigError(
                    f"Connection {self.conn_id!r} is not in the metadata DB, so its extras cannot hold tokens"
                )
            self._local.session = session
            self._local.saved = False
            try:
                yield
            except BaseException:
                # Never roll back a token pair we already received and saved: the old one is dead.
                if self._local.saved:
                    session.commit()
                raise
            finally:
                self._local.session = None
                self._local.saved = False


def _text(sql: str) -> Any:
    from sqlalchemy import text

    return text(sql)


class _SqliteFileLock:
    """Cross-process lock for SQLite metadata DBs (single host by nature)."""

    def __init__(self, db_path: str | None, conn_id: str, timeout: float) -> None:
        base = db_path if db_path and db_path != ":memory:" else os.path.join(os.getcwd(), "airflow-sqlite")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in conn_id)
        self.path = f"{base}.exactonline-{safe}.lock"
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise ExactOnlineAuthError(
                        f"could not take the token lock file {self.path} within {self.timeout:.0f} s (another "
                        f"process is refreshing the Exact Online token or writing the connection, and seems stuck)"
                    ) from None
                time.sleep(0.05)

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------------------------------------
class _Variables:
    """Airflow Variables read fresh, bypassing ``[secrets] use_cache`` (we need the latest value):
    through the Task SDK in workers, triggerers and ``dag.test()``, through the ORM elsewhere
    (api-server, scheduler, CLI, scripts)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def get(self, key: str) -> str | None:
        with contextlib.suppress(Exception):
            from airflow.sdk.execution_time.cache import SecretCache

            SecretCache.invalidate_variable(key)
        value = self.model.get(key, None)  # the default: ``default`` (Task SDK) / ``default_var`` (ORM)
        return None if value is None else str(value)

    def set(self, key: str, value: str) -> None:
        self.model.set(key, value, description="Written by airflow-provider-exactonline; do not edit.")


def _variables() -> _Variables:
    if process_context.process_kind() == process_context.TASK_SDK:
        from airflow.sdk import Variable as SdkVariable

        return _Variables(SdkVariable)
    from airflow.models import Variable as OrmVariable

    return _Variables(OrmVariable)


class VariableTokenStore:
    """The token pair in Airflow Variable ``exactonline_token__{conn_id}`` (JSON), plus a lease.

    Works wherever Variables can be written: Airflow 3 workers and triggerers (through the Task SDK),
    ``dag.test()``, and ORM processes. Variables have no compare-and-swap, so the lease in
    ``exactonline_lease__{conn_id}`` (``{"owner", "expires_at"}``) uses timed mutual exclusion
    (Fischer's algorithm): read; if free or expired, write our lease; wait ``settle_delay`` - longer than
    the slowest Variable write can take to land - then read again and proceed only if it is still ours.
    Anyone who read "free" before our write landed has written theirs by then, and the last writer wins.

    While waiting, a change of the token Variable raises :class:`StoreStateChanged` so the caller can
    pick up the new pair without queueing for the lease.
    """

    read_only = False

    def __init__(
        self,
        conn_id: str,
        *,
        settle_delay: float | None = None,
        lease_ttl: float | None = None,
        lock_timeout: float | None = None,
        backend: Any = None,
        client_secret: str | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.name = "variable"
        self._client_secret = client_secret  # None: looked up from the connection when first needed
        self.token_key = f"{TOKEN_VARIABLE_PREFIX}{conn_id}"
        self.lease_key = f"{LEASE_VARIABLE_PREFIX}{conn_id}"
        self.settle_delay = settle_delay if settle_delay is not None else _conf_float("token_lease_settle_seconds", 1.5)
        # The lease must outlive the token call (120 s timeout) plus persisting the result.
        self.lease_ttl = lease_ttl if lease_ttl is not None else _conf_float("token_lease_ttl_seconds", 240.0)
        self.lock_timeout = (
            lock_timeout if lock_timeout is not None else _conf_float("token_lock_timeout", self.lease_ttl + 60.0)
        )
        self._backend = backend
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.acquire_seconds: list[float] = []  # measured lease acquisitions, for diagnostics
        self._thread_lock = threading.Lock()

    @property
    def backend(self) -> Any:
        return self._backend or _variables()

    @property
    def client_secret(self) -> str:
        if self._client_secret is None:
            self._client_secret = client_secret_of(self.conn_id)
        return self._client_secret

    def _read_raw(self, key: str) -> str | None:
        return self.backend.get(key)

    # -- protocol
    def load(self) -> TokenState | None:
        """The stored pair (encrypted, or plaintext from an older version); raises
        :class:`ExactOnlineReauthorizationRequired` when it cannot be decrypted (client secret changed)."""
        raw = self._read_raw(self.token_key)
        if not raw:
            return None
        try:
            data = decrypt_json(raw, self.client_secret, self.conn_id)
        except json.JSONDecodeError:
            log.warning("Variable %s is not valid JSON; ignoring it", self.token_key)
            return None
        state = TokenState.from_dict(data)
        if state is not None:
            mask(state.access_token, state.refresh_token)
        return state

    def save(self, state: TokenState) -> None:
        self.backend.set(
            self.token_key,
            encrypt_json(state.to_dict(), self.client_secret, self.conn_id, clear={"obtained_at": state.obtained_at}),
        )

    def _read_lease(self) -> dict[str, Any]:
        raw = self._read_raw(self.lease_key)
        if not raw:
            return {}
        try:
            lease = json.loads(raw)
        except ValueError:
            return {}
        return lease if isinstance(lease, dict) else {}

    def _lease_free(self, lease: dict[str, Any]) -> bool:
        owner = lease.get("owner")
        try:
            expires_at = float(lease.get("expires_at") or 0)
        except (TypeError, ValueError):
            expires_at = 0.0
        return not owner or owner == self.owner or expires_at <= time.time()

    def _write_lease(self, owner: str | None, ttl: float) -> None:
        payload = {"owner": owner, "expires_at": time.time() + ttl if owner else 0.0}
        self.backend.set(self.lease_key, json.dumps(payload))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self._thread_lock:
            started = time.monotonic()
            deadline = started + self.lock_timeout
            snapshot = self._read_raw(self.token_key)
            attempts = 0
            while True:
                attempts += 1
                lease = self._read_lease()
                if self._lease_free(lease):
                    self._write_lease(self.owner, self.lease_ttl)
                    time.sleep(self.settle_delay)
                    if self._read_lease().get("owner") == self.owner:
                        break
                if time.monotonic() > deadline:
                    holder = lease.get("owner") or "unknown"
                    raise ExactOnlineAuthError(
                        f"Connection {self.conn_id!r}: could not take the token lease (Variable "
                        f"{self.lease_key!r}) within {self.lock_timeout:.0f} s; held by {holder}. If no refresh "
                        f"is running, delete that Variable."
                    )
                time.sleep(random.uniform(0.15, 0.5))
                current = self._read_raw(self.token_key)
                if current != snapshot:
                    raise StoreStateChanged(self.token_key)
            waited = time.monotonic() - started
            self.acquire_seconds.append(waited)
            log.info("Took Exact Online token lease for %r in %.2f s (%d attempts)", self.conn_id, waited, attempts)
            try:
                yield
            finally:
                try:
                    if self._read_lease().get("owner") == self.owner:
                        self._write_lease(None, 0)
                except Exception:  # the lease expires by itself
                    log.warning("Could not release the token lease %r; it expires by itself", self.lease_key)


# ------------------------------------------------------------------------------------------------
class ConnectionReadOnlySource:
    """The connection's own extras, read through Airflow's normal lookup (env var, secrets backend,
    Execution API). Never written: a worker cannot write connections. It lets a fresh authorization,
    saved into the connection by the UI/CLI, win over an older Variable."""

    read_only = True

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.name = "connection (read-only)"

    def load(self) -> TokenState | None:
        try:
            if process_context.process_kind() == process_context.TASK_SDK:
                from airflow.sdk import Connection

                conn = Connection.get(self.conn_id)
                extras = conn.extra_dejson
            else:
                from airflow.models import Connection as OrmConnection

                extras = OrmConnection.get_connection_from_secrets(self.conn_id).extra_dejson
        except Exception as err:
            log.debug("Could not re-read connection %r: %s", self.conn_id, type(err).__name__)
            return None
        state = TokenState.from_extras(extras)
        if state is not None:
            mask(state.access_token, state.refresh_token)
        return state

    def save(self, state: TokenState) -> None:  # pragma: no cover - never called for read-only stores
        raise ExactOnlineConfigError(f"{self.name} is read-only")

    def lock(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------
def default_stores(config: Any, conn_extras: dict[str, Any] | None = None) -> list[Any]:
    """The stores for this process (rule in docs/tokens.md).

    * Task SDK process (worker, triggerer, dag.test): ``[VariableTokenStore, ConnectionReadOnlySource]``.
    * ORM process, connection row in the metadata DB: ``[ConnectionExtrasTokenStore, VariableTokenStore]``
      - both locked (row lock, then lease) and both written, so ORM processes exclude workers too.
    * ORM process, connection defined in an env var / secrets backend: ``[VariableTokenStore,
      ConnectionReadOnlySource]``.
    The connection's extras (``conn_extras``) are additionally a read-only seed in the TokenManager.
    """
    conn_id = config.conn_id
    if process_context.process_kind() == process_context.TASK_SDK:
        return [VariableTokenStore(conn_id, client_secret=config.client_secret), ConnectionReadOnlySource(conn_id)]
    extras_store = ConnectionExtrasTokenStore(conn_id)
    try:
        in_db = extras_store.exists()
    except Exception as err:
        raise ExactOnlineConfigError(
            f"Connection {conn_id!r}: cannot reach the Airflow metadata DB to keep rotating Exact Online tokens "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Run `airflow db migrate`, run inside "
            f"Airflow, or pass token_store=... to the hook."
        ) from err
    if in_db:
        return [extras_store, VariableTokenStore(conn_id, client_secret=config.client_secret)]
    return [VariableTokenStore(conn_id, client_secret=config.client_secret), ConnectionReadOnlySource(conn_id)]
