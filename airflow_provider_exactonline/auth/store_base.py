"""The token-store contract, the in-memory store, and the ``[exactonline]`` numbers the stores read."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError


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
