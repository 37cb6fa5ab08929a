"""A fake Exact Online server: real HTTP on loopback, as strict as Exact where it matters.

See ``docs/fake-server.md`` for the rules it enforces and how to use it in DAG tests. The server
never imports Airflow, so it starts in milliseconds and works without an Airflow home.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import html
import json
import random
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from airflow_provider_exactonline.clock import Clock, SystemClock
from airflow_provider_exactonline.testing import data as fakedata
from airflow_provider_exactonline.testing.data import (
    DELETED_FIELDS,
    DivisionData,
    EntityDef,
    EntityStore,
    Generator,
    field_types,
)
from airflow_provider_exactonline.testing.odata_query import (
    FilterError,
    compile_filter,
    date_ms,
    fields_in,
    key_equals,
    lower_bound,
    parse_filter,
    parse_orderby,
)

__all__ = ["FakeExactOnline", "RequestRecord", "TokenCall"]

DEFAULT_DIVISIONS = {1001: "Fake Company NL", 1002: "Fake Company BE"}
STANDARD_PAGE = 60
BULK_PAGE = 1000
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
_ERROR_STATUSES = {400, 401, 403, 404}
_ME_FIELDS: dict[str, str | None] = {
    "UserID": "string",
    "AccountingDivision": "number",
    "CurrentDivision": "number",
    "CustomerCode": "string",
    "DivisionCustomer": "string",
    "DivisionCustomerCode": "string",
    "DivisionCustomerName": "string",
    "Email": "string",
    "FirstName": "string",
    "FullName": "string",
    "Initials": "string",
    "IsClientUser": "boolean",
    "Language": "string",
    "LanguageCode": "string",
    "LastName": "string",
    "Legislation": "number",
    "ServerTime": "string",
    "ServerUtcOffset": "number",
    "UserName": "string",
}
_DIVISION_FIELDS: dict[str, str | None] = {
    "Code": "number",
    "City": "string",
    "Country": "string",
    "Created": "string",
    "Currency": "string",
    "Current": "boolean",
    "Customer": "string",
    "CustomerCode": "string",
    "CustomerName": "string",
    "Description": "string",
    "Hid": "number",
    "IsMainDivision": "boolean",
    "Legislation": "string",
    "Modified": "string",
    "StartDate": "string",
    "Status": "number",
    "VATNumber": "string",
}


@dataclass(frozen=True)
class TokenCall:
    """One call to ``/api/oauth2/token``. ``outcome`` is ``"ok"`` or the error kind."""

    grant_type: str
    status: int
    outcome: str
    time: float


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    status: int
    division: int | None
    time: float


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Fault:
    kind: str  # fail / drop / html
    remaining: int
    status: int
    path_contains: str | None
    when: str = "mid_response"


class _ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


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

        counts: dict[str, int] = {}
        for name, count in (rows or {}).items():
            entity = fakedata.resolve_entity(name)
            if not 0 <= int(count) <= fakedata.MAX_ROWS:
                raise ValueError(f"rows[{name!r}] must be between 0 and {fakedata.MAX_ROWS:,}")
            counts[entity.name] = int(count)
        self._generator = Generator(seed)
        self._data = {div: DivisionData(div, name, counts, self._generator) for div, name in self.divisions.items()}

        self._lock = threading.RLock()
        self._rng = random.Random(f"{seed}:tokens")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        # OAuth state
        self._codes: dict[str, dict[str, Any]] = {}
        self._access_tokens: dict[str, float] = {}  # token -> expires_at (current chain only)
        self._old_refresh_tokens: set[str] = set()
        self._chain: dict[str, Any] | None = None
        self._token_chain: list[dict[str, Any]] = []
        self._token_day_calls: dict[int, int] = {}
        # Counters
        self._token_calls: list[TokenCall] = []
        self._requests: list[RequestRecord] = []
        self._responses_429 = 0
        self._rate: dict[tuple[str, int], dict[str, int]] = {}
        self._errors: dict[tuple[str, int, str], deque[float]] = {}
        self._blocked_until: dict[tuple[str, int, str], float] = {}
        # Faults
        self._faults: list[_Fault] = []
        self._latency = (0.0, 0.0)
        self._token_delay = 0.0

    # ------------------------------------------------------------------------------------------
    # Lifecycle

    def start(self) -> FakeExactOnline:
        if self._server is not None:
            return self
        handler = type("FakeExactOnlineHandler", (_Handler,), {"fake": self})
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
            return list(self._token_calls)

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
            return self._responses_429

    @property
    def current_access_token(self) -> str | None:
        with self._lock:
            return self._chain["access_token"] if self._chain else None

    @property
    def current_refresh_token(self) -> str | None:
        with self._lock:
            return self._chain["refresh_token"] if self._chain else None

    @property
    def token_chain(self) -> list[dict[str, Any]]:
        """Token pairs issued since the last authorization, oldest first."""
        with self._lock:
            return [dict(t) for t in self._token_chain]

    @property
    def refresh_errors(self) -> Counter[str]:
        """Refused ``refresh_token`` grants by kind: old_refresh_token, too_early, refresh_token_expired, ..."""
        with self._lock:
            return Counter(
                c.outcome for c in self._token_calls if c.grant_type == "refresh_token" and c.outcome != "ok"
            )

    @property
    def token_errors(self) -> Counter[str]:
        with self._lock:
            return Counter(c.outcome for c in self._token_calls if c.outcome != "ok")

    def rate_limit_state(self, division: int | None = None) -> dict[str, int]:
        """Calls used in the current minute and day for ``(client_id, division)``."""
        division = division or self.current_division
        now = self.clock.time()
        with self._lock:
            state = self._rate_state(self.client_id, division, now)
            return {"minutely_used": state["minute_used"], "daily_used": state["daily_used"]}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            per_endpoint = Counter(f"{r.method} {r.path}" for r in self._requests)
            return {
                "base_url": self.base_url if self._server else None,
                "token_calls": len(self._token_calls),
                "token_outcomes": dict(Counter(c.outcome for c in self._token_calls)),
                "requests": len(self._requests),
                "requests_per_endpoint": dict(per_endpoint),
                "responses_429": self._responses_429,
                "current_access_token": self._chain["access_token"] if self._chain else None,
                "current_refresh_token": self._chain["refresh_token"] if self._chain else None,
                "chain_length": len(self._token_chain),
                "divisions": {
                    str(div): {name: store.live_count() for name, store in d.stores.items()}
                    for div, d in self._data.items()
                },
            }

    def reset_counters(self) -> None:
        """Forget logged requests, token calls, 429s, rate-limit and error-budget usage (not tokens or data)."""
        with self._lock:
            self._token_calls.clear()
            self._requests.clear()
            self._responses_429 = 0
            self._rate.clear()
            self._errors.clear()
            self._blocked_until.clear()
            self._token_day_calls.clear()

    # ------------------------------------------------------------------------------------------
    # Data helpers for tests

    def _division(self, division: int | None) -> DivisionData:
        div = division or self.current_division
        if div not in self._data:
            raise KeyError(f"unknown division {div}; the fake has {sorted(self._data)}")
        return self._data[div]

    def _store(self, entity: str, division: int | None) -> tuple[DivisionData, EntityStore]:
        d = self._division(division)
        return d, d.stores[fakedata.resolve_entity(entity).name]

    def records(self, entity: str, division: int | None = None) -> Iterator[dict[str, Any]]:
        """The current rows of ``entity`` (all fields, incl. ``Timestamp``), in creation order."""
        d, store = self._store(entity, division)
        std = field_types(store.entity, "standard")
        syn = field_types(store.entity, "sync")
        names = list(dict.fromkeys([*std, *syn]))
        defaults = {n: fakedata.default_value(std.get(n, syn.get(n))) for n in names}
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
            return dict(d.create(store, dict(data or {}), self.clock.time()))

    def update_record(
        self, entity: str, division: int | None = None, key: str | None = None, data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._lock:
            d, store = self._store(entity, division)
            pos = d.position_of(store, key or "")
            if pos is None:
                raise KeyError(f"no {store.entity.name} {key!r} in division {d.division}")
            return dict(d.update(store, pos, dict(data or {}), self.clock.time()))

    def delete_record(self, entity: str, division: int | None = None, key: str | None = None) -> dict[str, Any] | None:
        """Delete a row; returns its ``sync/Deleted`` entry (None for entities without an EntityType)."""
        with self._lock:
            d, store = self._store(entity, division)
            pos = d.position_of(store, key or "")
            if pos is None:
                raise KeyError(f"no {store.entity.name} {key!r} in division {d.division}")
            return d.delete(store, pos, self.clock.time())

    def key_of(self, entity: str, index: int, division: int | None = None) -> str:
        """The GUID of generated row ``index`` (deterministic for a seed)."""
        d, store = self._store(entity, division)
        return self._generator.guid(d.division, store.entity.name, index)

    # ------------------------------------------------------------------------------------------
    # Faults

    def set_latency(self, fixed: float = 0.0, jitter: float = 0.0) -> None:
        """Delay every /api response by ``fixed + uniform(0, jitter)`` real seconds."""
        with self._lock:
            self._latency = (max(0.0, fixed), max(0.0, jitter))

    def fail_next(self, n: int = 1, status: int = 503, path_contains: str | None = None) -> None:
        """Answer the next ``n`` matching requests with ``status`` (JSON error envelope), unprocessed.

        ``path_contains=None`` matches API calls (``/api/v1/...``); pass ``"oauth2/token"`` to fail token calls.
        """
        with self._lock:
            self._faults.append(_Fault("fail", n, status, path_contains))

    def drop_next(self, n: int = 1, path_contains: str | None = None, when: str = "mid_response") -> None:
        """Drop the connection on the next ``n`` matching requests.

        ``when="mid_response"``: the request is processed (a token call rotates the chain!), then the
        headers and half the body are sent and the socket closed. ``"before_response"``: closed right
        after the request is read, without processing it.
        """
        if when not in ("mid_response", "before_response"):
            raise ValueError("when must be 'mid_response' or 'before_response'")
        with self._lock:
            self._faults.append(_Fault("drop", n, 0, path_contains, when))

    def html_error_next(self, n: int = 1, status: int = 200, path_contains: str | None = None) -> None:
        """Answer the next ``n`` matching requests with an HTML page (``text/html``) instead of JSON."""
        with self._lock:
            self._faults.append(_Fault("html", n, status, path_contains))

    def set_token_delay(self, seconds: float) -> None:
        """Hold token responses for ``seconds`` real seconds *after* the token was issued (lost-response tests)."""
        with self._lock:
            self._token_delay = max(0.0, seconds)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._latency = (0.0, 0.0)
            self._token_delay = 0.0

    def _take_fault(self, path: str) -> _Fault | None:
        lowered = path.lower()
        with self._lock:
            for fault in self._faults:
                if fault.path_contains is None:
                    matches = lowered.startswith("/api/v1/")
                else:
                    matches = fault.path_contains.lower() in lowered
                if matches and fault.remaining > 0:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------------------------------
    # OAuth

    def issue_tokens(self) -> dict[str, Any]:
        """Mint a token pair as a completed authorization would (replacing the chain); returns the token JSON."""
        with self._lock:
            return self._new_chain(self.clock.time())

    def _mint(self, now: float) -> dict[str, Any]:
        access = "AAEA" + secrets.token_urlsafe(48)
        refresh = "__1P!I" + secrets.token_urlsafe(32)
        expires_at = now + self.access_token_lifetime
        self._access_tokens[access] = expires_at
        self._chain = {
            "access_token": access,
            "refresh_token": refresh,
            "issued_at": now,
            "expires_at": expires_at,
            "refresh_issued_at": now,
        }
        self._token_chain.append(dict(self._chain))
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": _fmt_seconds(self.access_token_lifetime),
            "refresh_token": refresh,
        }

    def _new_chain(self, now: float) -> dict[str, Any]:
        if self._chain:
            self._old_refresh_tokens.add(self._chain["refresh_token"])
        self._access_tokens.clear()
        self._token_chain = []
        return self._mint(now)

    def _redirect_ok(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:
            return True
        if not self.allow_any_loopback_redirect:
            return False
        parts = urlsplit(redirect_uri)
        return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS

    def _auth_page(self, method: str, params: dict[str, str]) -> _Response:
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        state = params.get("state", "")
        if client_id != self.client_id:
            return _html_page(400, "Unknown application", "The client_id is not a registered app.")
        if not redirect_uri or not self._redirect_ok(redirect_uri):
            return _html_page(
                400, "Invalid redirect URI", "The redirect_uri does not match the app's registered redirect URI."
            )
        if params.get("response_type", "code") != "code":
            return _html_page(400, "Unsupported response type", "Only response_type=code is supported.")
        action = params.get("action")
        if method == "GET" and not self.auto_approve:
            hidden = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in params.items()
                if k in ("client_id", "redirect_uri", "state", "response_type", "force_login")
            )
            body = (
                "<!DOCTYPE html><html><head><title>Exact Online - Authorize app</title></head><body>"
                "<h1>Fake Exact Online</h1><p>The app <b>" + html.escape(client_id) + "</b> asks for access to "
                'your administrations.</p><form method="post" action="/api/oauth2/auth">'
                + hidden
                + '<button type="submit" name="action" value="authorize" id="authorize">Authorize</button> '
                '<button type="submit" name="action" value="deny" id="deny">Deny</button></form></body></html>'
            )
            return _Response(200, body.encode(), "text/html; charset=utf-8")
        sep = "&" if "?" in redirect_uri else "?"
        if action == "deny":
            location = redirect_uri + sep + urlencode({"error": "access_denied", "state": state})
        else:
            code = secrets.token_urlsafe(24)
            with self._lock:
                self._codes[code] = {
                    "redirect_uri": redirect_uri,
                    "client_id": client_id,
                    "issued_at": self.clock.time(),
                    "used": False,
                }
            location = redirect_uri + sep + urlencode({"code": code, "state": state})
        return _Response(302, b"", "text/html; charset=utf-8", [("Location", location)])

    def _token_endpoint(self, headers: Mapping[str, str], body: bytes) -> _Response:
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        grant = form.get("grant_type", "")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            with contextlib.suppress(Exception):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                from urllib.parse import unquote_plus

                client_id, secret = client_id or unquote_plus(user), secret or unquote_plus(password)
        now = self.clock.time()
        with self._lock:
            day = int(now // 86_400)
            used = self._token_day_calls.get(day, 0)
            self._token_day_calls[day] = used + 1
            if self.token_calls_per_day is not None and used >= self.token_calls_per_day:
                return self._token_error(
                    grant,
                    400,
                    "rate_limited",
                    "access_denied",
                    f"Rate limit exceeded: more than {self.token_calls_per_day} token requests today",
                    reason="TooManyTokenRequests",
                )
            if client_id != self.client_id or secret != self.client_secret:
                return self._token_error(grant, 401, "invalid_client", "invalid_client", "Invalid client credentials.")
            if grant == "authorization_code":
                code = self._codes.get(form.get("code", ""))
                if code is None or code["used"]:
                    return self._token_error(grant, 400, "invalid_code", "invalid_grant", "Invalid or used code.")
                code["used"] = True
                if now > code["issued_at"] + self.authorization_code_lifetime:
                    return self._token_error(grant, 400, "code_expired", "invalid_grant", "The code has expired.")
                if form.get("redirect_uri") != code["redirect_uri"]:
                    return self._token_error(
                        grant, 400, "redirect_mismatch", "invalid_grant", "redirect_uri does not match."
                    )
                token = self._new_chain(now)
                self._token_calls.append(TokenCall(grant, 200, "ok", now))
                return _Response(200, _json_bytes(token), "application/json", [("Cache-Control", "no-store")])
            if grant == "refresh_token":
                presented = form.get("refresh_token", "")
                chain = self._chain
                if chain is None or presented != chain["refresh_token"]:
                    if presented in self._old_refresh_tokens:
                        return self._token_error(
                            grant, 401, "old_refresh_token", "unauthorized_client", "Old refresh token used."
                        )
                    return self._token_error(grant, 400, "invalid_grant", "invalid_grant", "Invalid refresh token.")
                expires = chain["refresh_issued_at"] + self.refresh_token_lifetime
                if now > expires:
                    return self._token_error(
                        grant,
                        400,
                        "refresh_token_expired",
                        "invalid_request",
                        f"The refresh token expired at {_utc(expires)} and it is now {_utc(now)}.",
                    )
                if chain["expires_at"] - now > self.refresh_window:
                    return self._token_error(
                        grant,
                        400,
                        "too_early",
                        "access_denied",
                        "Rate limit exceeded: access_token not expired",
                        reason="TooEarlyToRefreshTokens",
                    )
                self._old_refresh_tokens.add(presented)
                token = self._mint(now)
                self._token_calls.append(TokenCall(grant, 200, "ok", now))
                return _Response(200, _json_bytes(token), "application/json", [("Cache-Control", "no-store")])
            return self._token_error(
                grant,
                400,
                "unsupported_grant_type",
                "unsupported_grant_type",
                f"grant_type {grant!r} is not supported.",
            )

    def _token_error(
        self, grant: str, status: int, outcome: str, error: str, description: str, reason: str | None = None
    ) -> _Response:
        self._token_calls.append(TokenCall(grant, status, outcome, self.clock.time()))
        headers = [("Reason", reason)] if reason else []
        return _Response(
            status, _json_bytes({"error": error, "error_description": description}), "application/json", headers
        )

    # ------------------------------------------------------------------------------------------
    # Rate limits

    def _rate_state(self, client: str, division: int, now: float) -> dict[str, int]:
        state = self._rate.setdefault((client, division), {"day": -1, "daily_used": 0, "minute": -1, "minute_used": 0})
        day, minute = int(now // 86_400), int(now // 60)
        if state["day"] != day:
            state["day"], state["daily_used"] = day, 0
        if state["minute"] != minute:
            state["minute"], state["minute_used"] = minute, 0
        return state

    def _rate_headers(self, state: dict[str, int], daily: bool = True, minutely: bool = True) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if daily and self.daily_limit is not None:
            out += [
                ("X-RateLimit-Limit", str(self.daily_limit)),
                ("X-RateLimit-Remaining", str(max(0, self.daily_limit - state["daily_used"]))),
                ("X-RateLimit-Reset", str((state["day"] + 1) * 86_400_000)),
            ]
        if minutely and self.minutely_limit is not None:
            out += [
                ("X-RateLimit-Minutely-Limit", str(self.minutely_limit)),
                ("X-RateLimit-Minutely-Remaining", str(max(0, self.minutely_limit - state["minute_used"]))),
                ("X-RateLimit-Minutely-Reset", str((state["minute"] + 1) * 60_000)),
            ]
        return out

    # ------------------------------------------------------------------------------------------
    # Request handling

    def _serve(self, handler: _Handler, body: bytes) -> None:
        method = handler.command
        parts = urlsplit(handler.path)
        path = parts.path
        headers = {k: v for k, v in handler.headers.items()}
        headers_ci = {k.lower(): v for k, v in headers.items()}
        is_admin = path.startswith("/_fake/")
        fault = None if is_admin else self._take_fault(handler.path)
        if fault is not None and fault.kind == "drop" and fault.when == "before_response":
            self._log(method, path, parts.query, 0, None)
            handler.drop()
            return
        if fault is not None and fault.kind in ("fail", "html"):
            response = (
                _html_page(fault.status, "Exact Online", "An error occurred. Please try again later.")
                if fault.kind == "html"
                else self._error(
                    fault.status, "Service Unavailable" if fault.status == 503 else "Internal error", headers_ci
                )
            )
            self._log(method, path, parts.query, response.status, None)
            handler.respond(response)
            return
        if not is_admin:
            fixed, jitter = self._latency
            if fixed or jitter:
                time.sleep(fixed + random.uniform(0, jitter))
        division: int | None = None
        try:
            lowered = path.lower()
            if is_admin:
                response = self._admin(method, path, parts.query, body)
            elif lowered == "/api/oauth2/auth":
                params = dict(parse_qsl(parts.query, keep_blank_values=True))
                if method == "POST":
                    params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
                response = self._auth_page(method, params)
            elif lowered == "/api/oauth2/token":
                if method != "POST":
                    response = _Response(405, _json_bytes({"error": "invalid_request"}), "application/json")
                else:
                    response = self._token_endpoint(headers, body)
                    if self._token_delay:
                        time.sleep(self._token_delay)
            elif lowered.startswith("/api/v1/"):
                response, division = self._api(method, path, parts.query, headers_ci, body)
            else:
                response = _html_page(404, "Not found", "The resource cannot be found.")
        except Exception as err:  # a bug in the fake: answer 500 and keep serving
            response = self._error(500, f"Fake server error: {type(err).__name__}: {err}", headers_ci)
        if not is_admin:
            self._log(method, path, parts.query, response.status, division)
        if fault is not None and fault.kind == "drop":
            handler.respond(response, truncate=True)
        else:
            handler.respond(response)

    def _log(self, method: str, path: str, query: str, status: int, division: int | None) -> None:
        with self._lock:
            self._requests.append(RequestRecord(method, path, query, status, division, self.clock.time()))

    def _error(self, status: int, message: str, headers_ci: Mapping[str, str], reason: str | None = None) -> _Response:
        extra = [("Reason", reason)] if reason else []
        if _wants_json(headers_ci):
            body = _json_bytes({"error": {"code": "", "message": {"lang": "", "value": message}}})
            return _Response(status, body, "application/json; charset=utf-8", extra)
        xml = (
            '<?xml version="1.0" encoding="utf-8" standalone="yes"?>'
            '<error xmlns="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">'
            f'<code></code><message xml:lang="">{xml_escape(message)}</message></error>'
        )
        return _Response(status, xml.encode(), "application/xml; charset=utf-8", extra)

    def _api(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[_Response, int | None]:
        now = self.clock.time()
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        with self._lock:
            expires = self._access_tokens.get(token) if token else None
            if expires is None or now >= expires:
                response = self._error(401, "Unauthorized", headers)
                response.headers.append(("WWW-Authenticate", 'Bearer error="invalid_token"'))
                return response, None
            segments = [s for s in path[len("/api/v1/") :].split("/") if s]
            if len(segments) >= 2 and segments[0].lower() == "current":
                division = self.current_division
                resource = "/".join(segments)
            else:
                try:
                    division = int(segments[0]) if segments else -1
                except ValueError:
                    return self._error(404, "Not found", headers), None
                if division not in self._data:
                    return self._error(403, "Forbidden: no access to this division", headers), None
                resource = "/".join(segments[1:])
            client = self.client_id
            endpoint = _endpoint_key(resource)
            budget_key = (client, division, endpoint)
            blocked = self._blocked_until.get(budget_key)
            if blocked is not None and now < blocked:
                return self._error(
                    403,
                    f"Too many errors on this endpoint: it is blocked for your app until {_utc(blocked)}.",
                    headers,
                    reason="TooManyErrors",
                ), division
            state = self._rate_state(client, division, now)
            if self.daily_limit is not None and state["daily_used"] >= self.daily_limit:
                self._responses_429 += 1
                response = self._error(429, "API rate limit exceeded (daily).", headers)
                response.headers += self._rate_headers(state, daily=True, minutely=False)
                return response, division
            if self.minutely_limit is not None and state["minute_used"] >= self.minutely_limit:
                self._responses_429 += 1
                response = self._error(429, "API rate limit exceeded.", headers)
                response.headers += self._rate_headers(state, daily=False, minutely=True)
                return response, division
            state["daily_used"] += 1
            state["minute_used"] += 1
            try:
                response = self._resource(method, division, resource, query, headers, body, now)
            except _ApiError as err:
                response = self._error(err.status, err.message, headers, err.reason)
            except FilterError as err:
                response = self._error(400, str(err), headers)
            response.headers += self._rate_headers(state)
            if self.error_budget is not None and response.status in _ERROR_STATUSES:
                errors = self._errors.setdefault(budget_key, deque())
                errors.append(now)
                while errors and errors[0] <= now - 3600:
                    errors.popleft()
                if len(errors) >= self.error_budget:
                    self._blocked_until[budget_key] = now + 3600
                    errors.clear()
            return response, division

    # ------------------------------------------------------------------------------------------
    # Resources

    def _resource(
        self, method: str, division: int, resource: str, query: str, headers: Mapping[str, str], body: bytes, now: float
    ) -> _Response:
        params = _odata_params(query)
        lowered = resource.lower()
        count_only = False
        if lowered.endswith("/$count"):
            resource, lowered, count_only = resource[: -len("/$count")], lowered[: -len("/$count")], True
        key: str | None = None
        if resource.endswith(")") and "(" in resource:
            resource, _, key_text = resource.partition("(")
            lowered = resource.lower()
            key = _parse_key(key_text[:-1])
        base = f"{self.base_url}/api/v1/{division}/"
        if lowered == "current/me":
            _only_get(method)
            return self._collection(
                headers,
                params,
                iter([(None, self._me_row(now))]),
                _ME_FIELDS,
                STANDARD_PAGE,
                None,
                "Me",
                lambda row: {
                    "uri": f"{self.base_url}/api/v1/current/Me(guid'{row.get('UserID')}')",
                    "type": "Exact.Web.Api.System.Me",
                },
                self.base_url + "/api/v1/current/Me",
                False,
            )
        if lowered == "system/divisions":
            _only_get(method)
            rows = [(None, self._division_row(div)) for div in self._data]
            return self._collection(
                headers,
                params,
                iter(rows),
                _DIVISION_FIELDS,
                STANDARD_PAGE,
                None,
                "Divisions",
                lambda row: {
                    "uri": f"{base}system/Divisions({row.get('Code')})",
                    "type": "Exact.Web.Api.System.Division",
                },
                base + resource,
                False,
                count_only=count_only,
            )
        d = self._data[division]
        if lowered == "sync/deleted":
            _only_get(method)
            return self._sync_listing(d, None, params, headers, base + resource, count_only)
        found = fakedata.entity_for_path(lowered)
        if found is None:
            raise _ApiError(404, f"Resource not found: '{resource}'.")
        entity, variant = found
        store = d.stores[entity.name]
        if method == "GET":
            if key is not None:
                if variant != "standard":
                    raise _ApiError(400, "Key lookups are not supported on bulk and sync endpoints.")
                return self._single(d, store, key, params, headers, base)
            if variant == "sync":
                return self._sync_listing(d, store, params, headers, base + resource, count_only)
            return self._listing(d, store, variant, params, headers, base, resource, count_only)
        if variant != "standard" or method not in entity.methods:
            raise _ApiError(405, f"Method {method} is not allowed on '{resource}'.")
        payload = _json_body(body) if method in ("POST", "PUT") else {}
        types = field_types(entity, "standard")
        for name in payload:
            if name not in types and name != "__metadata":
                raise _ApiError(
                    400,
                    f"Error processing request stream. The property name '{name}' specified for type "
                    f"'Exact.Web.Api.Models.{entity.model}' is not valid.",
                )
        payload.pop("__metadata", None)
        if method == "POST":
            if key is not None:
                raise _ApiError(405, "POST to an entity key is not allowed; POST to the collection.")
            for name in entity.required:
                if payload.get(name) in (None, ""):
                    raise _ApiError(400, f"Mandatory: {name}")
            row = d.create(store, payload, now)
            fields = (
                list(types)
                if "return=representation" in headers.get("prefer", "")
                else [entity.key, *[n for n in payload if n != entity.key]]
            )
            serialised = self._serialise(row, fields, types, entity, "standard", base)
            response = self._document(headers, {"d": serialised}, entity.name, status=201)
            response.headers.append(("Location", serialised["__metadata"]["uri"]))
            return response
        if key is None:
            raise _ApiError(405, f"{method} needs an entity key, e.g. {resource}(guid'...').")
        pos = d.position_of(store, key)
        if pos is None:
            raise _ApiError(404, "Not found")
        if method == "PUT":
            d.update(store, pos, payload, now)
        else:
            d.delete(store, pos, now)
        return _Response(204)

    def _me_row(self, now: float) -> dict[str, Any]:
        div = self.current_division
        return {
            "UserID": self._generator.user_id,
            "AccountingDivision": div,
            "CurrentDivision": div,
            "DivisionCustomer": self._generator.guid(div, "customer", 0),
            "DivisionCustomerCode": f"{div:>18}",
            "DivisionCustomerName": self.divisions[div],
            "Email": "fake.user@example.com",
            "FirstName": "Fake",
            "FullName": "Fake User",
            "Initials": "F.",
            "IsClientUser": False,
            "Language": "EN-US",
            "LanguageCode": "en-US",
            "LastName": "User",
            "Legislation": 1,
            "UserName": "fake.user@example.com",
            "ServerTime": fakedata.date_value(fakedata.wall_ms(now)),
            "ServerUtcOffset": 0,
            "CustomerCode": f"{div:>18}",
        }

    def _division_row(self, div: int) -> dict[str, Any]:
        name = self.divisions[div]
        country = "BE" if name.upper().endswith(" BE") else "NL"
        return {
            "Code": div,
            "Description": name,
            "Current": div == self.current_division,
            "Country": country,
            "Currency": "EUR",
            "Customer": self._generator.guid(div, "customer", 0),
            "CustomerCode": f"{div:>18}",
            "CustomerName": name,
            "Hid": div,
            "IsMainDivision": div == self.current_division,
            "Legislation": country,
            "Status": 1,
            "City": "Delft" if country == "NL" else "Gent",
            "VATNumber": f"{country}{div:09d}B01",
            "Created": fakedata.date_value(fakedata._CREATED_BASE_MS),
            "Modified": fakedata.date_value(fakedata._CREATED_BASE_MS),
            "StartDate": fakedata.date_value(fakedata._CREATED_BASE_MS),
        }

    def _single(
        self,
        d: DivisionData,
        store: EntityStore,
        key: str,
        params: dict[str, str],
        headers: Mapping[str, str],
        base: str,
    ) -> _Response:
        types = field_types(store.entity, "standard")
        fields = _select(params, types, store.entity, required=False)
        pos = d.position_of(store, key)
        row = None if pos is None else d.row_at(store, pos)
        if row is None:
            raise _ApiError(404, "Not found")
        return self._document(
            headers, {"d": self._serialise(row, fields, types, store.entity, "standard", base)}, store.entity.name
        )

    def _serialise(
        self,
        row: Mapping[str, Any],
        fields: list[str],
        types: Mapping[str, str | None],
        entity: EntityDef | None,
        variant: str,
        base: str,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if entity is not None:
            key = row.get(entity.key)
            if variant == "sync":
                uri = f"{base}{entity.sync_path}({row.get('Timestamp')}L)"
                kind = f"Exact.Web.Api.Models.Sync.{entity.model}"
            else:
                path = entity.path if variant == "standard" else entity.bulk_path
                uri = f"{base}{path}(guid'{key}')"
                kind = f"Exact.Web.Api.Models.{entity.model}"
            out["__metadata"] = {"uri": uri, "type": kind}
            names, defaults, navigation = _plan(entity, variant, tuple(fields))
            out.update(zip(names, map(row.get, names, defaults), strict=True))  # C-speed for ~160 fields x 1,000 rows
            for name in navigation:
                out[name] = {"__deferred": {"uri": f"{uri}/{name}"}}
            return out
        out["__metadata"] = {
            "uri": f"{base}sync/Deleted({row.get('Timestamp')}L)",
            "type": "Exact.Web.Api.Sync.Deleted",
        }
        for name in fields:
            out[name] = row.get(name)
        return out

    def _listing(
        self,
        d: DivisionData,
        store: EntityStore,
        variant: str,
        params: dict[str, str],
        headers: Mapping[str, str],
        base: str,
        resource: str,
        count_only: bool,
    ) -> _Response:
        entity = store.entity
        types = field_types(entity, variant)
        fields = [] if count_only else _select(params, types, entity, required=variant == "bulk")
        predicate, filter_fields, node = _filter(params, types, entity)
        skiptoken = params.get("$skiptoken")
        start = 0
        if skiptoken:
            key = _parse_key(skiptoken) or ""
            # A deleted row keeps its position, so paging resumes even if the last row was deleted.
            pos = store.created_keys.get(key)
            if pos is None:
                pos = self._generator.index_of(d.division, entity.name, key)
                if pos is not None and pos >= store.count:
                    pos = None
            if pos is None:
                raise _ApiError(400, f"Invalid $skiptoken '{skiptoken}'.")
            start = pos + 1
        pinned = key_equals(node, entity.key) if node is not None else None
        defaults = {n: fakedata.default_value(t) for n, t in types.items()}

        def source() -> Iterator[tuple[str | None, dict[str, Any]]]:
            if pinned is not None:
                pos = d.position_of(store, pinned)
                rows = [] if pos is None or pos < start else [(pos, d.row_at(store, pos))]
            else:
                rows = d.iter_natural(store, start)  # type: ignore[assignment]
            for _, row in rows:
                if row is None:
                    continue
                if predicate is not None:
                    probe = row if not filter_fields else {**{f: defaults.get(f) for f in filter_fields}, **row}
                    if not predicate(probe):
                        continue
                yield f"guid'{row[entity.key]}'", row

        page = BULK_PAGE if variant == "bulk" else STANDARD_PAGE
        if count_only:
            if predicate is None and pinned is None:
                return _text(str(store.live_count()))
            return _text(str(sum(1 for _ in source())))
        return self._collection(
            headers,
            params,
            source(),
            types,
            page,
            entity,
            entity.name,
            None,
            base + resource,
            True,
            variant=variant,
            fields=fields,
            base=base,
        )

    def _sync_listing(
        self,
        d: DivisionData,
        store: EntityStore | None,
        params: dict[str, str],
        headers: Mapping[str, str],
        url: str,
        count_only: bool,
    ) -> _Response:
        entity = store.entity if store is not None else None
        types = field_types(entity, "sync") if entity is not None else DELETED_FIELDS
        if not count_only and self.sync_requires_select and "$select" not in params:
            raise _ApiError(400, "$select is mandatory for sync endpoints. Please add a $select to the query string.")
        fields = [] if count_only else _select(params, types, entity, required=False)
        predicate, _, node = _filter(params, types, entity)
        allowed = {"timestamp"} if entity is not None else {"timestamp", "entitytype"}
        if node is not None:
            bad = [f for f in fields_in(node) if f.lower() not in allowed]
            if bad:
                raise _ApiError(
                    400,
                    f"Filtering on '{bad[0]}' is not allowed on this sync endpoint: only "
                    f"{' and '.join(sorted(a.title().replace('type', 'Type') for a in allowed))} may be filtered.",
                )
        after = 0
        bound = lower_bound(node, "Timestamp") if node is not None else None
        if bound is not None:
            after = bound[0] - 1 if bound[1] else bound[0]
        skiptoken = params.get("$skiptoken")
        if skiptoken:
            try:
                after = max(after, int(skiptoken.strip().strip("'").rstrip("Ll")))
            except ValueError:
                raise _ApiError(400, f"Invalid $skiptoken '{skiptoken}'.") from None

        def source() -> Iterator[tuple[str | None, dict[str, Any]]]:
            rows = d.iter_sync(store, after) if store is not None else d.iter_deleted(after)
            for row in rows:
                if predicate is not None and not predicate(row):
                    continue
                yield f"{row['Timestamp']}L", row

        if count_only:
            return _text(str(sum(1 for _ in source())))
        base = url[: url.index("/api/v1/")] + f"/api/v1/{d.division}/"
        return self._collection(
            headers,
            params,
            source(),
            types,
            BULK_PAGE,
            entity,
            entity.name if entity else "Deleted",
            None,
            url,
            True,
            variant="sync",
            fields=fields,
            base=base,
        )

    def _collection(
        self,
        headers: Mapping[str, str],
        params: dict[str, str],
        source: Iterator[tuple[str | None, dict[str, Any]]],
        types: Mapping[str, str | None],
        page: int,
        entity: EntityDef | None,
        title: str,
        metadata: Any,
        url: str,
        pageable: bool,
        *,
        variant: str = "standard",
        fields: list[str] | None = None,
        base: str = "",
        count_only: bool = False,
    ) -> _Response:
        if fields is None:
            fields = _select(params, types, entity, required=False)
        if metadata is None or entity is not None:
            predicate = None
        else:
            predicate, _, _ = _filter(params, types, entity)
        if predicate is not None:
            source = ((t, r) for t, r in source if predicate(r))
        if count_only:
            return _text(str(sum(1 for _ in source)))
        top = _int_param(params, "$top")
        skip = _int_param(params, "$skip") or 0
        orderby = params.get("$orderby")
        if orderby:
            order = parse_orderby(orderby)
            for name, _ in order:
                if name not in types:
                    raise _ApiError(400, _no_property(name, entity))
            rows = [r for _, r in source]
            for name, desc in reversed(order):
                rows.sort(key=functools.partial(_row_sort_key, name), reverse=desc)
            source = iter([(None, r) for r in rows])
        elif "$skiptoken" in params:
            skip = 0
        for _ in range(skip):
            if next(source, None) is None:
                break
        limit = page if top is None else min(page, top)
        results: list[tuple[str | None, dict[str, Any]]] = []
        for item in source:
            results.append(item)
            if len(results) >= limit:
                break
        more = len(results) == limit and (top is None or top > limit) and next(source, None) is not None
        serialised = []
        for _, row in results:
            if metadata is not None:
                document = {"__metadata": metadata(row)}
                document.update({n: row.get(n, fakedata.default_value(types.get(n))) for n in fields})
                serialised.append(document)
            else:
                serialised.append(self._serialise(row, fields, types, entity, variant, base))
        payload: dict[str, Any] = {"results": serialised}
        if more and pageable:
            next_params = {k: v for k, v in params.items() if k not in ("$skiptoken", "$skip", "$top")}
            if top is not None:
                next_params["$top"] = str(top - limit)
            if orderby:
                next_params["$skip"] = str(skip + limit)
            else:
                next_params["$skiptoken"] = results[-1][0] or ""
            payload["__next"] = url + "?" + "&".join(f"{k}={quote(v, safe=_SAFE)}" for k, v in next_params.items())
        return self._document(headers, {"d": payload}, title)

    def _document(
        self, headers: Mapping[str, str], document: dict[str, Any], title: str, status: int = 200
    ) -> _Response:
        if _wants_json(headers):
            return _Response(status, _json_bytes(document), "application/json; charset=utf-8")
        return _Response(status, _atom(document, title).encode("utf-8"), "application/atom+xml;type=feed;charset=utf-8")

    # ------------------------------------------------------------------------------------------
    # Admin endpoints (/_fake/...): for the CLI server, where the test cannot call methods

    def _admin(self, method: str, path: str, query: str, body: bytes) -> _Response:
        name = path[len("/_fake/") :].strip("/").lower()
        params = dict(parse_qsl(query))
        try:
            payload = json.loads(body.decode() or "{}") if body else {}
            if name == "stats" and method == "GET":
                return _json_response(200, self.stats())
            if name == "issue_tokens" and method == "POST":
                return _json_response(200, self.issue_tokens())
            if name == "reset_counters" and method == "POST":
                self.reset_counters()
                return _json_response(200, {"ok": True})
            if name == "records" and method == "GET":
                limit = int(params.get("limit", "1000"))
                rows = []
                for row in self.records(params["entity"], int(params["division"]) if "division" in params else None):
                    rows.append(row)
                    if len(rows) >= limit:
                        break
                return _json_response(200, {"results": rows})
            if name == "mutate" and method == "POST":
                op = payload.get("op")
                entity = payload["entity"]
                division = payload.get("division")
                if op == "create":
                    return _json_response(201, self.create_record(entity, division, payload.get("data") or {}))
                if op == "update":
                    return _json_response(
                        200, self.update_record(entity, division, payload["key"], payload.get("data"))
                    )
                if op == "delete":
                    return _json_response(200, {"deleted": self.delete_record(entity, division, payload["key"])})
                return _json_response(400, {"error": "op must be create, update or delete"})
            if name == "faults" and method == "POST":
                if "latency" in payload:
                    self.set_latency(**payload["latency"])
                if "fail_next" in payload:
                    self.fail_next(**payload["fail_next"])
                if "drop_next" in payload:
                    self.drop_next(**payload["drop_next"])
                if "html_error_next" in payload:
                    self.html_error_next(**payload["html_error_next"])
                if "token_delay" in payload:
                    self.set_token_delay(float(payload["token_delay"]))
                if payload.get("clear"):
                    self.clear_faults()
                return _json_response(200, {"ok": True})
        except (KeyError, TypeError, ValueError) as err:
            return _json_response(400, {"error": f"{type(err).__name__}: {err}"})
        return _json_response(404, {"error": f"unknown admin endpoint {method} /_fake/{name}"})


# ----------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeExactOnline/1.0"

    def version_string(self) -> str:
        return "FakeExactOnline/1.0"

    timeout = 120
    fake: FakeExactOnline

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # no Nagle delay on keep-alive connections
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.fake._lock:
            self.fake._connections.discard(self.connection)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        self.fake._serve(self, body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def respond(self, response: _Response, truncate: bool = False) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            body = response.body[: len(response.body) // 2] if truncate else response.body
            # Headers and body in one write (end_headers() would flush the headers on their own).
            self._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
            self.flush_headers()
            if truncate:
                self.drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# Helpers

_SAFE = "$,'()/:*-._~"


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _wants_json(headers: Mapping[str, str]) -> bool:
    return "application/json" in headers.get("accept", "").lower()


def _html_page(status: int, title: str, message: str) -> _Response:
    body = (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return _Response(status, body.encode(), "text/html; charset=utf-8")


def _json_response(status: int, value: Any) -> _Response:
    return _Response(status, _json_bytes(value), "application/json")


def _text(value: str) -> _Response:
    return _Response(200, value.encode(), "text/plain; charset=utf-8")


def _only_get(method: str) -> None:
    if method != "GET":
        raise _ApiError(405, f"Method {method} is not allowed on this endpoint.")


def _endpoint_key(resource: str) -> str:
    first = resource.split("(")[0].lower()
    return first[: -len("/$count")] if first.endswith("/$count") else first


def _odata_params(query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        out[name.lower() if name.startswith("$") else name] = value
    return out


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    if name not in params:
        return None
    try:
        value = int(params[name])
    except ValueError:
        raise _ApiError(400, f"Invalid value '{params[name]}' for {name}.") from None
    if value < 0:
        raise _ApiError(400, f"{name} must not be negative.")
    return value


def _parse_key(text: str) -> str | None:
    value = text.strip()
    if value.lower().startswith("guid'") and value.endswith("'"):
        return value[5:-1].lower()
    if value.startswith("'") and value.endswith("'"):
        return value[1:-1].lower()
    return value.lower() or None


def _no_property(name: str, entity: EntityDef | None) -> str:
    kind = f"Exact.Web.Api.Models.{entity.model}" if entity else "Exact.Web.Api.Models"
    return f"Could not find a property named '{name}' on type '{kind}'."


def _select(
    params: Mapping[str, str], types: Mapping[str, str | None], entity: EntityDef | None, required: bool
) -> list[str]:
    raw = params.get("$select")
    if raw is None or not raw.strip():
        if required:
            raise _ApiError(400, "$select is mandatory for bulk endpoints. Please add a $select to the query string.")
        return list(types)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if names == ["*"]:
        return list(types)
    for name in names:
        if name not in types:
            raise _ApiError(400, _no_property(name, entity))
    return list(dict.fromkeys(names))


def _filter(
    params: Mapping[str, str], types: Mapping[str, str | None], entity: EntityDef | None
) -> tuple[Any, list[str], Any]:
    raw = params.get("$filter")
    if raw is None or not raw.strip():
        return None, [], None
    node = parse_filter(raw)

    def resolve(name: str) -> str:
        if name not in types:
            raise _ApiError(400, _no_property(name, entity))
        return name

    predicate = compile_filter(node, resolve)
    return predicate, sorted(fields_in(node)), node


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _ApiError(400, f"Error processing request stream. The request body is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise _ApiError(400, "Error processing request stream. A JSON object was expected.")
    return value


@functools.lru_cache(maxsize=256)
def _plan(
    entity: EntityDef, variant: str, fields: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[Any, ...], tuple[str, ...]]:
    """Field names, their defaults, and the navigation fields among them (deferred links on standard)."""
    types = field_types(entity, variant)
    defaults = tuple(fakedata.default_value(types.get(name)) for name in fields)
    navigation = tuple(n for n in fields if variant == "standard" and n in entity.navigation)
    return fields, defaults, navigation


def _row_sort_key(name: str, row: Mapping[str, Any]) -> tuple[int, Any]:
    return _sort_key(row.get(name))


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    ms = date_ms(value)
    if ms is not None:
        return (1, ms)
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value).lower())


def _atom_value(name: str, value: Any) -> str:
    if value is None:
        return f'<d:{name} m:null="true" />'
    if isinstance(value, dict):
        return ""
    if isinstance(value, bool):
        return f'<d:{name} m:type="Edm.Boolean">{"true" if value else "false"}</d:{name}>'
    if isinstance(value, int):
        kind = "Edm.Int64" if abs(value) > 2**31 else "Edm.Int32"
        return f'<d:{name} m:type="{kind}">{value}</d:{name}>'
    if isinstance(value, float):
        return f'<d:{name} m:type="Edm.Double">{value!r}</d:{name}>'
    ms = date_ms(value)
    if ms is not None:
        stamp = (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
        return f'<d:{name} m:type="Edm.DateTime">{stamp}</d:{name}>'
    return f"<d:{name}>{xml_escape(str(value))}</d:{name}>"


def _atom_entry(row: Mapping[str, Any]) -> str:
    meta = row.get("__metadata") or {}
    uri = xml_escape(str(meta.get("uri", "")))
    props = "".join(_atom_value(k, v) for k, v in row.items() if k != "__metadata")
    return (
        f'<entry><id>{uri}</id><title type="text" /><updated>{_utc_iso()}</updated>'
        f"<author><name /></author><category term={quoteattr(str(meta.get('type', '')))} "
        'scheme="http://schemas.microsoft.com/ado/2007/08/dataservices/scheme" />'
        f'<content type="application/xml"><m:properties>{props}</m:properties></content></entry>'
    )


def _utc_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_ATOM_NS = (
    'xmlns="http://www.w3.org/2005/Atom" '
    'xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
    'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"'
)


def _atom(document: dict[str, Any], title: str) -> str:
    d = document.get("d")
    head = '<?xml version="1.0" encoding="utf-8" standalone="yes"?>'
    if isinstance(d, dict) and "results" in d:
        entries = "".join(_atom_entry(r) for r in d["results"])
        link = f'<link rel="next" href={quoteattr(d["__next"])} />' if d.get("__next") else ""
        return (
            f'{head}<feed {_ATOM_NS}><title type="text">{xml_escape(title)}</title><id />'
            f"<updated>{_utc_iso()}</updated>{entries}{link}</feed>"
        )
    entry = _atom_entry(d if isinstance(d, dict) else {})
    return head + entry.replace("<entry>", f"<entry {_ATOM_NS}>", 1)
