"""The token pair in an Airflow Variable, encrypted (see token_encryption.py), guarded by a Variable lease."""

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
from typing import Any

from airflow_provider_exactonline.auth import process_context
from airflow_provider_exactonline.auth.masking import mask
from airflow_provider_exactonline.auth.store_base import StoreStateChanged, _conf_float
from airflow_provider_exactonline.auth.token_encryption import client_secret_of, decrypt_json, encrypt_json
from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.exceptions import ExactOnlineAuthError

log = logging.getLogger(__name__)

TOKEN_VARIABLE_PREFIX = "exactonline_token__"
LEASE_VARIABLE_PREFIX = "exactonline_lease__"


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
