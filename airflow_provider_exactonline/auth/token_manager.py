"""The token lifecycle: hand out a valid access token, rotate the pair safely across processes.

Rules (Exact Online): refresh tokens are single-use; a new access token may be requested only in the
last 30 s of a 600 s token or after it expired; the token endpoint allows 200 calls a day. So:

* refresh lazily, only when the token is missing, expired or inside the (scaled, shrunk) window;
* take the store locks, re-read every store after each lock (someone else may have refreshed), and
  persist the new pair to every writable store before releasing;
* "Old refresh token used" means another process rotated the pair: poll the stores for it briefly
  before declaring the chain dead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import requests
import tenacity

from airflow_provider_exactonline.auth import oauth
from airflow_provider_exactonline.auth.masking import mask
from airflow_provider_exactonline.auth.token_encryption import TokenValueUndecryptable
from airflow_provider_exactonline.auth.token_state import DEFAULT_WINDOW_SAFETY, TokenState
from airflow_provider_exactonline.auth.token_stores import StoreStateChanged, _conf_float, default_stores, is_read_only
from airflow_provider_exactonline.clock import SYSTEM_CLOCK, Clock
from airflow_provider_exactonline.exceptions import (
    ExactOnlineAuthError,
    ExactOnlineConfigError,
    ExactOnlineReauthorizationRequired,
)
from airflow_provider_exactonline.transport import never_reached_server

log = logging.getLogger(__name__)


#: In every ExactOnlineReauthorizationRequired message, so also in a ``last_error`` it left in the stores.
REAUTHORIZATION_MARK = "must be re-authorized"


class TokenManager:
    """Valid access tokens for one connection, shared safely by any number of processes.

    ``stores``: the first writable store is the primary; all writable stores are locked (in order) and
    written; read-only stores and ``seed`` are only read. The newest state (by ``obtained_at``) wins.
    """

    def __init__(
        self,
        config: Any,
        stores: Sequence[Any],
        *,
        seed: TokenState | None = None,
        clock: Clock = SYSTEM_CLOCK,
        session: requests.Session | None = None,
        token_timeout: float = oauth.DEFAULT_TOKEN_TIMEOUT,
        window_safety: float = DEFAULT_WINDOW_SAFETY,
        reuse_poll_seconds: float | None = None,
        connect_retries: int = 3,
        connect_retry_wait: float = 1.0,
    ) -> None:
        self.config = config
        self.stores = list(stores)
        self.seed = seed
        self.clock = clock
        self.session = session
        self.token_timeout = token_timeout
        self.window_safety = window_safety
        self.reuse_poll_seconds = (
            reuse_poll_seconds if reuse_poll_seconds is not None else _conf_float("token_reuse_poll_seconds", 8.0)
        )
        self.connect_retries = connect_retries
        self.connect_retry_wait = connect_retry_wait
        self.token_calls = 0
        self.refreshes = 0
        self._state: TokenState | None = None
        self._unpersisted: TokenState | None = None
        self._too_early_until = 0.0
        self._lock = threading.RLock()
        mask(config.client_secret)
        if seed is not None:
            mask(seed.access_token, seed.refresh_token)

    # --- public API ------------------------------------------------------------------------------
    @property
    def state(self) -> TokenState | None:
        return self._state

    @property
    def conn_id(self) -> str:
        return str(self.config.conn_id)

    def reload(self) -> TokenState | None:
        """Re-read every store: the newest state, or None when the connection was never authorized."""
        with self._lock:
            return self._reload()

    def access_token(self) -> str:
        """A valid access token; refreshes only when missing, expired or inside the refresh window."""
        with self._lock:
            self._retry_persist()
            now = self.clock.time()
            state = self._state
            if self._usable(state, now):
                return state.access_token  # type: ignore[union-attr, return-value]
            state = self._reload()
            if self._usable(state, now):
                return state.access_token  # type: ignore[union-attr, return-value]
            return self._refresh().access_token  # type: ignore[return-value]

    def on_unauthorized(self, rejected_access_token: str) -> str:
        """The API answered 401 for ``rejected_access_token``: find or make a better one, or raise."""
        with self._lock:
            now = self.clock.time()
            state = self._reload()
            if (
                state is not None
                and state.access_token
                and state.access_token != rejected_access_token
                and not state.needs_refresh(now, self.window_safety)
            ):
                return state.access_token
            if state is None or state.needs_refresh(now, self.window_safety):
                return self._refresh().access_token  # type: ignore[return-value]
            raise ExactOnlineAuthError(
                f"Exact refused the access token of connection {self.conn_id!r} although it is valid for another "
                f"{state.expires_at - now:.0f} s (the authorization may have been replaced or revoked). If this "
                f"persists, re-authorize: open the 'Exact Online' page in the Airflow UI, or run "
                f"`airflow-exactonline authorize {self.conn_id}`.",
                status_code=401,
            )

    # --- reading ---------------------------------------------------------------------------------
    def _usable(self, state: TokenState | None, now: float) -> bool:
        if state is None or not state.access_token:
            return False
        if not state.needs_refresh(now, self.window_safety):
            return True
        # Exact told us it is too early (clock skew): keep the still-valid token for a moment.
        return now < self._too_early_until and not state.is_expired(now)

    def _writable(self) -> list[Any]:
        return [store for store in self.stores if not is_read_only(store)]

    def _load_all(self) -> list[TokenState]:
        states: list[TokenState] = []
        unreadable: list[TokenValueUndecryptable] = []
        for store in self.stores:
            try:
                state = store.load()
            except TokenValueUndecryptable as unreadable_err:
                unreadable.append(unreadable_err)
                continue
            if state is not None:
                mask(state.access_token, state.refresh_token)
                states.append(state)
        if self.seed is not None:
            states.append(self.seed)
        if self._state is not None:
            states.append(self._state)
        for err in unreadable:
            # Only a pair obtained after the unreadable one (a re-authorization) may replace it.
            if not any(s.obtained_at and err.obtained_at and s.obtained_at > err.obtained_at for s in states):
                raise err
            log.warning("Connection %r: replacing a token pair encrypted with an older client secret", self.conn_id)
        return states

    def _reload(self) -> TokenState | None:
        """The newest state across stores, seed and memory (ties: earlier store wins)."""
        newest: TokenState | None = None
        for state in self._load_all():
            if newest is None or state.newer_than(newest):
                newest = state
        self._state = newest
        return newest

    # --- refreshing ------------------------------------------------------------------------------
    def _refresh(self) -> TokenState:
        while True:
            try:
                return self._refresh_under_locks()
            except StoreStateChanged:
                state = self._reload()
                if self._usable(state, self.clock.time()):
                    return state  # type: ignore[return-value]

    def _refresh_under_locks(self) -> TokenState:
        writable = self._writable()
        if not writable:
            names = ", ".join(str(getattr(store, "name", store)) for store in self.stores) or "none"
            raise ExactOnlineConfigError(
                f"Connection {self.conn_id!r}: no writable token store (stores: {names}), so the pair a refresh "
                f"returns could not be saved and Exact's single-use refresh token would be lost with this process. "
                f"Pass a token_store that can save (read_only = False), or leave token_store unset."
            )
        with contextlib.ExitStack() as locks:
            state = self._state
            self._raise_if_refused_before(state)
            for store in writable:
                locks.enter_context(store.lock())
                state = self._reload()  # someone may have refreshed while we waited
                if self._usable(state, self.clock.time()):
                    return state  # type: ignore[return-value]
                self._raise_if_refused_before(state)
            if state is None or not state.refresh_token:
                raise ExactOnlineReauthorizationRequired(self.conn_id, "there is no refresh token (never authorized?)")
            try:
                new = self._call_refresh(state)
            except oauth.TooEarlyToRefresh as err:
                return self._after_too_early(state, err)
            except oauth.OldRefreshTokenUsed as err:
                found = self._poll_for_newer(state)
                if found is not None:
                    log.warning(
                        "Connection %r: another process rotated the token pair concurrently; using its pair",
                        self.conn_id,
                    )
                    return found
                self._record_error(state, err)
                raise
            except ExactOnlineAuthError as err:
                self._record_error(state, err)
                raise
            self.refreshes += 1
            self._state = new
            self._persist(new, writable)
            return new

    def _raise_if_refused_before(self, state: TokenState | None) -> None:
        """The stores say Exact already refused this pair's refresh token for good (``last_error``, written
        by whoever tried): raise without spending another call of the 200 a day on a dead chain. A new
        authorization saves new tokens without ``last_error``, so it is never blocked by this."""
        if state is not None and state.last_error and REAUTHORIZATION_MARK in state.last_error:
            raise ExactOnlineReauthorizationRequired(
                self.conn_id,
                "Exact already refused this connection's refresh token (see last_refresh_error); it is not sent again",
            )

    def _call_refresh(self, state: TokenState) -> TokenState:
        refresh_token = state.refresh_token
        assert refresh_token is not None

        def attempt() -> TokenState:
            self.token_calls += 1
            try:
                return oauth.refresh_grant(
                    self.config, refresh_token, timeout=self.token_timeout, clock=self.clock, session=self.session
                )
            except requests.RequestException as err:
                if never_reached_server(err):
                    self.token_calls -= 1  # it never reached the server
                raise

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(never_reached_server),
            stop=tenacity.stop_after_attempt(self.connect_retries + 1),
            wait=tenacity.wait_exponential_jitter(initial=self.connect_retry_wait, max=30),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except requests.RequestException as err:
            detail = "could not connect" if never_reached_server(err) else "the call failed after it was sent"
            raise ExactOnlineAuthError(
                f"Token refresh for connection {self.conn_id!r} failed: {detail} ({type(err).__name__}). "
                + (
                    ""
                    if never_reached_server(err)
                    else "Exact may have rotated the pair; if the next refresh says 'Old refresh token used', "
                    "re-authorize."
                )
            ) from None

    def _after_too_early(self, state: TokenState, err: ExactOnlineAuthError) -> TokenState:
        """Exact says the access token has not expired: use what the stores (or we) have."""
        now = self.clock.time()
        latest = self._reload()
        if latest is not None and latest.access_token and not latest.same_tokens(state) and not latest.is_expired(now):
            return latest
        if state.access_token and not state.is_expired(now):
            # Our clock thinks we are in the window, Exact does not: keep the token a little longer.
            self._too_early_until = now + max(1.0, state.refresh_window(self.window_safety))
            log.warning(
                "Connection %r: Exact says the access token has not expired yet (clock skew?); keeping it", self.conn_id
            )
            return state
        found = self._poll_for_newer(state)
        if found is not None:
            return found
        if state.access_token:
            # Exact considers a token valid that we consider expired: trust Exact for a moment.
            self._too_early_until = now + max(1.0, state.refresh_window(self.window_safety))
            self._state = state
            return state
        raise err

    def _poll_for_newer(self, state: TokenState) -> TokenState | None:
        deadline = time.monotonic() + self.reuse_poll_seconds
        while True:
            latest = self._reload()
            if latest is not None and latest.newer_than(state) and not latest.same_tokens(state):
                return latest
            if time.monotonic() >= deadline:
                self._state = state
                return None
            time.sleep(0.25)

    # --- persisting -------------------------------------------------------------------------------
    def _persist(self, state: TokenState, stores: Sequence[Any]) -> None:
        saved = 0
        for store in stores:
            try:
                store.save(state)
                saved += 1
            except Exception as err:
                log.error(
                    "Connection %r: could not save the new token pair to %s (%s: %s)",
                    self.conn_id,
                    getattr(store, "name", store),
                    type(err).__name__,
                    str(err)[:200],
                )
        if stores and not saved:
            # The old pair is dead on Exact's side; keep the new one in memory and retry the save.
            self._unpersisted = state
            log.error(
                "Connection %r: the new token pair lives only in this process until a save succeeds", self.conn_id
            )
        else:
            self._unpersisted = None

    def _retry_persist(self) -> None:
        pending = self._unpersisted
        if pending is not None and (self._state is None or not self._state.newer_than(pending)):
            self._persist(pending, self._writable())

    def _record_error(self, state: TokenState, err: BaseException) -> None:
        """Write ``last_error`` next to the unchanged tokens, where the stores still hold this state."""
        message = str(getattr(err, "message", err))[:500]
        for store in self._writable():
            try:
                current = store.load()
                if current is None or current.same_tokens(state):
                    store.save(replace(state, last_error=message))
            except Exception:
                log.debug("Could not record the refresh error in %s", getattr(store, "name", store))


def build_token_manager(
    config: Any,
    conn_extras: dict[str, Any] | None,
    *,
    token_store: Any = None,
    clock: Clock | None = None,
    session: requests.Session | None = None,
) -> TokenManager:
    """What the hook calls: the stores for this process (or ``token_store``), seeded from the connection."""
    seed = TokenState.from_extras(conn_extras or {})
    stores = [token_store] if token_store is not None else default_stores(config, conn_extras)
    return TokenManager(config, stores, seed=seed, clock=clock or SYSTEM_CLOCK, session=session)
