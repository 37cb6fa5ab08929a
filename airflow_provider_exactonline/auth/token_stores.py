"""Where the rotating token pair lives, and the cross-process lock that guards its rotation.

Exact's refresh tokens are single-use, so two processes must never refresh at once. Each store
offers ``lock()`` (exclusive across processes) and the holder re-reads with ``load()`` after taking
it. See docs/tokens.md for which store is used where and why.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_exactonline.auth import process_context
from airflow_provider_exactonline.auth.connection_store import ConnectionExtrasTokenStore, ConnectionReadOnlySource
from airflow_provider_exactonline.auth.store_base import (
    InMemoryTokenStore,
    StoreStateChanged,
    TokenStore,
    _conf_float,
    is_read_only,
)
from airflow_provider_exactonline.auth.variable_store import (
    LEASE_VARIABLE_PREFIX,
    TOKEN_VARIABLE_PREFIX,
    VariableTokenStore,
)
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

__all__ = [
    "LEASE_VARIABLE_PREFIX",
    "TOKEN_VARIABLE_PREFIX",
    "ConnectionExtrasTokenStore",
    "ConnectionReadOnlySource",
    "InMemoryTokenStore",
    "StoreStateChanged",
    "TokenStore",
    "VariableTokenStore",
    "_conf_float",
    "default_stores",
    "is_read_only",
]


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
