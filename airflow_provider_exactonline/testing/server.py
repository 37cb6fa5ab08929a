"""A fake Exact Online server: real HTTP on loopback, as strict as Exact where it matters.

See ``docs/fake-server.md`` for the rules it enforces and how to use it in DAG tests. The server
never imports Airflow, so it starts in milliseconds and works without an Airflow home. This module
holds the server's lifecycle, its inspection API for tests and the request dispatch; the concerns
live in ``oauth`` (tokens), ``limits`` (rate limits, error budget), ``faults``, ``resources`` and
``odata`` (the API), ``stores``/``generator``/``entities`` (the data) and ``admin`` (``/_fake/``).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from airflow_provider_exactonline.clock import Clock, SystemClock
from airflow_provider_exactonline.testing.dispatch import serve
from airflow_provider_exactonline.testing.entities import (
    MAX_ROWS,
    EntityDef,
    default_value,
    field_types,
    resolve_entity,
)
from airflow_provider_exactonline.testing.events import WriteEvent, WriteListener, WriteListeners
from airflow_provider_exactonline.testing.faults import FaultInjector
from airflow_provider_exactonline.testing.generator import Generator
from airflow_provider_exactonline.testing.http import (
    Handler,
)
from airflow_provider_exactonline.testing.limits import RateLimiter
from airflow_provider_exactonline.testing.oauth import OAuthServer, TokenCall
from airflow_provider_exactonline.testing.resources import ODataApi
from airflow_provider_exactonline.testing.stores import DivisionData, EntityStore

__all__ = ["FakeExactOnline", "RequestRecord", "TokenCall", "WriteEvent"]

DEFAULT_DIVISIONS = {1001: "Fake Company NL", 1002: "Fake Company BE"}


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    status: int
    division: int | None
    time: float


class FakeExactOnline:
    """A fake Exact Online (OAuth2 + REST/OData) on ``http://127.0.0.1:<ephemeral port>``.

    Use as a context manager (``with FakeExactOnline() as fake: fake.base_url``), through the
    ``fake_exact_online`` pytest fixture, or ``python -m airflow_provider_exactonline.testing serve``.
    All lifetimes and limits are in seconds of ``clock`` (pass a ``ScaledClock`` to run faster).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        redirect_uris: Iterable[str] = ("http://127.0.0.1/callback",),
        allow_any_loopback_redirect: bool = True,
        divisions: Mapping[int, str] | None = None,
        rows: Mapping[str, int] | None = None,
        access_token_lifetime: float = 600.0,
        refresh_window: float | None = None,
        refresh_token_lifetime: float = 30 * 86_400.0,
        authorization_code_lifetime: float = 180.0,
        token_calls_per_day: int | None = 200,
        minutely_limit: int | None = 60,
        daily_limit: int | None = 5000,
        error_budget: int | None = None,
        clock: Clock | None = None,
        auto_approve: bool = False,
        seed: int = 0,
        sync_requires_select: bool = True,
        mandatory_filtering: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = tuple(redirect_uris)
        self.allow_any_loopback_redirect = allow_any_loopback_redirect
        self.divisions = dict(divisions) if divisions else dict(DEFAULT_DIVISIONS)
        if not self.divisions:
            raise ValueError("divisions must name at least one division")
        self.current_division = next(iter(self.divisions))
        self.access_token_lifetime = float(access_token_lifetime)
        self.refresh_window = (
            float(refresh_window) if refresh_window is not None else self.access_token_lifetime * 30 / 600
        )
        self.refresh_token_lifetime = float(refresh_token_lifetime)
        self.authorization_code_lifetime = float(authorization_code_lifetime)
        self.token_calls_per_day = token_calls_per_day
        self.minutely_limit = minutely_limit
        self.daily_limit = daily_limit
        self.error_budget = error_budget
        self.clock: Clock = clock or SystemClock()
        self.auto_approve = auto_approve
        self.seed = seed
        self.sync_requires_select = sync_requires_select
        #: Refuse (400) an unfiltered collection GET on the standard/bulk endpoint of an entity with a sync twin.
        self.mandatory_filtering = mandatory_filtering

        counts: dict[str, int] = {}
        for name, count in (rows or {}).items():
            entity = resolve_entity(name)
            if not 0 <= int(count) <= MAX_ROWS:
                raise ValueError(f"rows[{name!r}] must be between 0 and {MAX_ROWS:,}")
            counts[entity.name] = int(count)
        self._generator = Generator(seed)
        self._data = {div: DivisionData(div, name, counts, self._generator) for div, name in self.divisions.items()}

        self._lock = threading.RLock()
        self._rng = random.Random(f"{seed}:tokens")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._oauth = OAuthServer(self)
        self._limits = RateLimiter(self)
        self._faults = FaultInjector(self._lock)
        self._api_resources = ODataApi(self)
        self._requests: list[RequestRecord] = []
        self._write_listeners = WriteListeners()

    # ------------------------------------------------------------------------------------------
    # Lifecycle

    def start(self) -> FakeExactOnline:
        if self._server is not None:
            return self
        handler = type("FakeExactOnlineHandler", (Handler,), {"fake": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-exact-online", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeExactOnline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeExactOnline is not started; call start() or use it as a context manager")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def auth_url(self) -> str:
        return self.base_url + "/api/oauth2/auth"

    @property
    def token_url(self) -> str:
        return self.base_url + "/api/oauth2/token"

    def api_url(self, path: str, division: int | None = None) -> str:
        """``api_url("crm/Accounts")`` -> ``http://127.0.0.1:PORT/api/v1/1001/crm/Accounts``."""
        return f"{self.base_url}/api/v1/{division or self.current_division}/{path.lstrip('/')}"

    # ------------------------------------------------------------------------------------------
    # Inspection (thread-safe)

    @property
    def token_calls(self) -> list[TokenCall]:
        with self._lock:
            return list(self._oauth.token_calls)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def count_requests(self, path_substring: str | None = None, method: str | None = None) -> int:
        needle = path_substring.lower() if path_substring else None
        with self._lock:
            return sum(
                1
                for r in self._requests
                if (needle is None or needle in r.path.lower()) and (method is None or r.method == method.upper())
            )

    @property
    def responses_429(self) -> int:
        with self._lock:
            return self._limits.responses_429

    @property
    def current_access_token(self) -> str | None:
        with self._lock:
            return self._oauth.chain["access_token"] if self._oauth.chain else None

    @property
    def current_refresh_token(self) -> str | None:
        with self._lock:
            return self._oauth.chain["refresh_token"] if self._oauth.chain else None

    @property
    def token_chain(self) -> list[dict[str, Any]]:
        """Token pairs issued since the last authorization, oldest first."""
        with self._lock:
            return [dict(t) for t in self._oauth.token_chain]

    @property
    def refresh_errors(self) -> Counter[str]:
        """Refused ``refresh_token`` grants by kind: old_refresh_token, too_early, refresh_token_expired, ..."""
        with self._lock:
            return Counter(
                c.outcome for c in self._oauth.token_calls if c.grant_type == "refresh_token" and c.outcome != "ok"
            )

    @property
    def token_errors(self) -> Counter[str]:
        with self._lock:
            return Counter(c.outcome for c in self._oauth.token_calls if c.outcome != "ok")

    def rate_limit_state(self, division: int | None = None) -> dict[str, int]:
        """Calls used in the current minute and day for ``(client_id, division)``."""
        division = division or self.current_division
        now = self.clock.time()
        with self._lock:
            state = self._limits.state(self.client_id, division, now)
            return {"minutely_used": state["minute_used"], "daily_used": state["daily_used"]}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            per_endpoint = Counter(f"{r.method} {r.path}" for r in self._requests)
            return {
                "base_url": self.base_url if self._server else None,
                "token_calls": len(self._oauth.token_calls),
                "token_outcomes": dict(Counter(c.outcome for c in self._oauth.token_calls)),
                "requests": len(self._requests),
                "requests_per_endpoint": dict(per_endpoint),
                "responses_429": self._limits.responses_429,
                "current_access_token": self._oauth.chain["access_token"] if self._oauth.chain else None,
                "current_refresh_token": self._oauth.chain["refresh_token"] if self._oauth.chain else None,
                "chain_length": len(self._oauth.token_chain),
                "divisions": {
                    str(div): {name: store.live_count() for name, store in d.stores.items()}
                    for div, d in self._data.items()
                },
            }

    def reset_counters(self) -> None:
        """Forget logged requests, token calls, 429s, rate-limit and error-budget usage (not tokens or data)."""
        with self._lock:
            self._oauth.token_calls.clear()
            self._oauth.token_day_calls.clear()
            self._requests.clear()
            self._limits.reset()

    # ------------------------------------------------------------------------------------------
    # Data helpers for tests

    def _division(self, division: int | None) -> DivisionData:
        div = division or self.current_division
        if div not in self._data:
            raise KeyError(f"unknown division {div}; the fake has {sorted(self._data)}")
        return self._data[div]

    def _store(self, entity: str, division: int | None) -> tuple[DivisionData, EntityStore]:
        d = self._division(division)
        return d, d.store(resolve_entity(entity))

    def records(self, entity: str, division: int | None = None) -> Iterator[dict[str, Any]]:
        """The current rows of ``entity`` (all fields, incl. ``Timestamp``), in creation order."""
        d, store = self._store(entity, division)
        std = field_types(store.entity, "standard")
        syn = field_types(store.entity, "sync")
        names = list(dict.fromkeys([*std, *syn]))
        defaults = {n: default_value(std.get(n, syn.get(n))) for n in names}
        position = 0
        while True:
            with self._lock:
                batch = []
                for pos, row in d.iter_natural(store, position):
                    batch.append({n: row.get(n, defaults[n]) for n in names})
                    position = pos + 1
                    if len(batch) >= 500:
                        break
            if not batch:
                return
            yield from batch

    def record_count(self, entity: str, division: int | None = None) -> int:
        with self._lock:
            _, store = self._store(entity, division)
            return store.live_count()

    def get_record(self, entity: str, key: str, division: int | None = None) -> dict[str, Any] | None:
        with self._lock:
            d, store = self._store(entity, division)
            pos = d.position_of(store, key)
            return None if pos is None else d.full_row(store, d.row_at(store, pos) or {})

    def create_record(
        self, entity: str, division: int | None = None, data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create a row server-side (as another Exact user would); returns it with its new Timestamp."""
        with self._lock:
            d, store = self._store(entity, division)
            row = dict(d.create(store, dict(data or {}), self.clock.time()))
            self._queue_write(d.division, store.entity, "Create", row)
        self._write_listeners.emit()
        return row

    def update_record(
        self, entity: str, division: int | None = None, key: str | None = None, data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._lock:
            d, store = self._store(entity, division)
            pos = d.position_of(store, key or "")
            if pos is None:
                raise KeyError(f"no {store.entity.name} {key!r} in division {d.division}")
            row = dict(d.update(store, pos, dict(data or {}), self.clock.time()))
            self._queue_write(d.division, store.entity, "Update", row)
        self._write_listeners.emit()
        return row

    def delete_record(self, entity: str, division: int | None = None, key: str | None = None) -> dict[str, Any] | None:
        """Delete a row; returns its ``sync/Deleted`` entry (None for entities without an EntityType)."""
        with self._lock:
            d, store = self._store(entity, division)
            pos = d.position_of(store, key or "")
            if pos is None:
                raise KeyError(f"no {store.entity.name} {key!r} in division {d.division}")
            row = d.row_at(store, pos) or {}
            entry = d.delete(store, pos, self.clock.time())
            self._queue_write(d.division, store.entity, "Delete", {**row, "Timestamp": d.last_timestamp})
        self._write_listeners.emit()
        return entry

    # ------------------------------------------------------------------------------------------
    # Write listeners (see ``events.WriteEvent``)

    def add_write_listener(self, callback: WriteListener) -> None:
        """Call ``callback(WriteEvent)`` after every successful write (API or ``create_record`` & co.)."""
        self._write_listeners.add(callback)

    def remove_write_listener(self, callback: WriteListener) -> None:
        self._write_listeners.remove(callback)

    def _queue_write(self, division: int, entity: EntityDef, action: str, row: Mapping[str, Any]) -> None:
        self._write_listeners.queue(division, entity, action, row)

    def key_of(self, entity: str, index: int, division: int | None = None) -> str:
        """The GUID of generated row ``index`` (deterministic for a seed)."""
        d, store = self._store(entity, division)
        return self._generator.guid(d.division, store.entity.name, index)

    # ------------------------------------------------------------------------------------------
    # Faults (see ``faults.FaultInjector``)

    def set_latency(self, fixed: float = 0.0, jitter: float = 0.0) -> None:
        """Delay every /api response by ``fixed + uniform(0, jitter)`` real seconds."""
        self._faults.set_latency(fixed, jitter)

    def fail_next(self, n: int = 1, status: int = 503, path_contains: str | None = None) -> None:
        """Answer the next ``n`` matching requests with ``status``; ``path_contains=None``: API calls only."""
        self._faults.fail_next(n, status, path_contains)

    def drop_next(self, n: int = 1, path_contains: str | None = None, when: str = "mid_response") -> None:
        """Drop the connection on the next ``n`` matching requests (``mid_response`` or ``before_response``)."""
        self._faults.drop_next(n, path_contains, when)

    def html_error_next(self, n: int = 1, status: int = 200, path_contains: str | None = None) -> None:
        """Answer the next ``n`` matching requests with an HTML page (``text/html``) instead of JSON."""
        self._faults.html_error_next(n, status, path_contains)

    def set_token_delay(self, seconds: float) -> None:
        """Hold token responses for ``seconds`` real seconds *after* the token was issued."""
        self._faults.set_token_delay(seconds)

    def clear_faults(self) -> None:
        self._faults.clear_faults()

    # ------------------------------------------------------------------------------------------
    # OAuth (see ``oauth.OAuthServer``)

    def issue_tokens(self) -> dict[str, Any]:
        """Mint a token pair as a completed authorization would (replacing the chain); returns the token JSON."""
        return self._oauth.issue_tokens()

    # ------------------------------------------------------------------------------------------
    # Request handling (see ``dispatch``)

    def _serve(self, handler: Handler, body: bytes) -> None:
        serve(self, handler, body)

    def _log(self, method: str, path: str, query: str, status: int, division: int | None) -> None:
        with self._lock:
            self._requests.append(RequestRecord(method, path, query, status, division, self.clock.time()))
