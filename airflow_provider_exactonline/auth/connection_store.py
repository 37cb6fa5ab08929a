"""Stores on the Airflow connection: its extras in the metadata DB under a row lock (ORM processes),
and a read-only view through Airflow's normal connection lookup (workers, env vars, secrets backends)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from airflow_provider_exactonline.auth import process_context
from airflow_provider_exactonline.auth.masking import mask
from airflow_provider_exactonline.auth.store_base import _conf_float
from airflow_provider_exactonline.auth.token_state import EXTRA_LAST_ERROR, TokenState
from airflow_provider_exactonline.exceptions import ExactOnlineAuthError, ExactOnlineConfigError

log = logging.getLogger(__name__)


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
