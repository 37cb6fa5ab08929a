"""One API call to Exact Online: connection set-up, tokens, rate limits, retries (the hook's transport).

One hook = one connection, one ``requests.Session`` and one :class:`RateLimiter` (limits kept
per division); export pages are read over one kept-alive ``http.client`` connection where they can be
(:class:`~airflow_provider_exactonline.transport.PageReader`). The hook is not thread-safe; give each
thread its own.

What every call does (:meth:`ApiCalls.request`):

1. Daily budget known to be spent -> :class:`ExactOnlineRateLimitExceeded` (``scope="daily"``)
   *without* calling, so the caller can reschedule for ``reset_at``. Minutely budget spent ->
   sleep (on the injected clock) until the minutely reset.
2. Bearer token from the token manager (which refreshes under a lock when needed).
3. ``Accept: application/json`` always; no redirects (a redirect from the API is a login page).
4. HTTP 401 -> ``token_manager.on_unauthorized(token)`` once; the call is repeated once only if
   that gives a different token. 429 -> wait for the minutely reset and try again (bounded).
   400/403/404 are never retried: Exact blocks the app for an hour after 10 such errors per
   endpoint. 5xx and connection errors are retried with exponential backoff and jitter for
   GET/PUT/DELETE; a POST is re-sent only when the connection failed before anything was sent.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Mapping
from functools import cached_property
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import requests
import tenacity
import urllib3
from airflow.exceptions import AirflowNotFoundException
from airflow.sdk import BaseHook

from airflow_provider_exactonline import __version__
from airflow_provider_exactonline.auth.masking import mask
from airflow_provider_exactonline.clock import SYSTEM_CLOCK, Clock
from airflow_provider_exactonline.config import DEFAULT_CONN_ID, ExactOnlineConfig, extras_of
from airflow_provider_exactonline.exceptions import ExactOnlineConfigError, ExactOnlineRateLimitExceeded
from airflow_provider_exactonline.hooks.errors import (
    IDEMPOTENT_METHODS,
    Transient,
    d_of,
    http_error,
    loggable,
    transport_error,
)
from airflow_provider_exactonline.ratelimit import RateLimiter, RateLimitState, build_rate_limiter
from airflow_provider_exactonline.transport import ExactOnlineAdapter, PageReader

log = logging.getLogger(__name__)

#: How many 429 answers in a row one call may wait out before giving up.
MAX_429_RETRIES = 3

_QUERY_SAFE = "$,'()/:*"
_DIVISION_IN_PATH_RE = re.compile(r"/api/v1/(\d+)(?:/|$)")
#: An absolute http(s) URL with nothing for requests to encode: unreserved and reserved characters and
#: %XX escapes only (RFC 3986), no user info, no fragment; see :meth:`ApiCalls._prepare`.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(?::\d+)?(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*)?")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def is_plain_url(url: str) -> bool:
    """Whether ``url`` has nothing left to encode (:data:`_PLAIN_URL`, every ``%`` a valid escape)."""
    return bool(_PLAIN_URL.fullmatch(url)) and not _BAD_ESCAPE.search(url)


def division_of_url(url: str) -> int | None:
    """The division in an API URL (``.../api/v1/{division}/...``), or None (``current/Me``, token calls)."""
    match = _DIVISION_IN_PATH_RE.search(urlsplit(url).path)
    return int(match.group(1)) if match else None


def stored_in_metadata_db(conn_id: str) -> bool:
    """True when the metadata DB has a connection ``conn_id``; False where the ORM is off limits
    (task processes) or unreachable. Never raises."""
    try:
        from airflow_provider_exactonline.auth import process_context

        if process_context.process_kind() != process_context.ORM:
            return False
        from airflow.models import Connection
        from airflow.utils.session import create_session

        with create_session() as session:
            return session.query(Connection.id).filter(Connection.conn_id == conn_id).first() is not None
    except Exception as err:
        log.debug("Could not look %s up in the metadata DB: %s", conn_id, type(err).__name__)
        return False


@dataclasses.dataclass
class _CallInfo:
    """One ``request``: shared by all its attempts (one token swap and MAX_429_RETRIES waits per
    request, not per attempt)."""

    division: int | None
    purpose: str
    swapped: bool = False
    tries_429: int = 0
    #: An export page: read through the hook's PageReader where it can be (see :meth:`ApiCalls._page_reader_for`).
    page_read: bool = False


class ApiCalls(BaseHook):
    """The transport layer of :class:`~airflow_provider_exactonline.hooks.exactonline.ExactOnlineHook`
    (see its parameters): the connection, its tokens and session, and :meth:`request`."""

    def __init__(
        self,
        exactonline_conn_id: str = DEFAULT_CONN_ID,
        *,
        division: int | None = None,
        token_store: Any = None,
        timezone: str | None = None,
        clock: Clock | None = None,
        max_retries: int = 5,
        timeout: float = 60,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        super().__init__()
        self.exactonline_conn_id = exactonline_conn_id
        self._division = division
        self._token_store = token_store
        self._timezone = timezone
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.max_retries = max(0, int(max_retries))
        self.timeout = float(timeout)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._rate_limiter = rate_limiter
        self._api_calls = 0
        self._token_conn_id: str | None = None

    # ------------------------------------------------------------------ set-up

    @cached_property
    def connection(self) -> Any:
        try:
            return self.get_connection(self.exactonline_conn_id)
        except AirflowNotFoundException as err:
            if stored_in_metadata_db(self.exactonline_conn_id):
                raise ExactOnlineConfigError(
                    f"{err}: connection {self.exactonline_conn_id!r} is in the metadata DB, but this process "
                    f"does not read connections from there. In a plain Python script set the environment "
                    f"variable _AIRFLOW_PROCESS_CONTEXT=server (as the api-server and the CLI do), or run the "
                    f"code as an Airflow task or through `airflow-exactonline`."
                ) from err
            raise

    @cached_property
    def config(self) -> ExactOnlineConfig:
        config = ExactOnlineConfig.from_connection(self.connection)
        mask(config.client_secret)
        return config

    @cached_property
    def token_manager(self) -> Any:
        from airflow_provider_exactonline.auth.token_manager import build_token_manager

        config = self.config
        if self._token_conn_id and self._token_conn_id != config.conn_id:
            # Tokens belong to the stored connection this one was copied from (see test_connection).
            config = dataclasses.replace(config, conn_id=self._token_conn_id)
        return build_token_manager(config, extras_of(self.connection), token_store=self._token_store, clock=self.clock)

    @cached_property
    def session(self) -> requests.Session:
        """One session per hook. The environment's proxy and CA settings (``HTTPS_PROXY``, ``NO_PROXY``,
        ``REQUESTS_CA_BUNDLE``) are read once here, not scanned again by requests on every call."""
        session = requests.Session()
        session.headers.update(
            {"Accept": "application/json", "User-Agent": f"airflow-provider-exactonline/{__version__}"}
        )
        session.proxies.update(requests.utils.get_environ_proxies(self.config.base_url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
        session.trust_env = False  # settled above; netrc credentials are never wanted (we send a bearer token)
        for prefix in ("https://", "http://"):
            session.mount(prefix, ExactOnlineAdapter())
        return session

    @cached_property
    def page_reader(self) -> PageReader:
        """The reader of export pages (see :class:`~airflow_provider_exactonline.transport.PageReader`)."""
        return PageReader(
            self.config.base_url, verify=self.session.verify, cert=self.session.cert, timeout=self.timeout
        )

    def _page_reader_for(self, url: str) -> PageReader | None:
        """The page reader where it sends what requests would: a direct connection (no proxy) through the
        hook's own adapter, and a URL with nothing left to encode (see :meth:`_prepare`). A proxy, another
        adapter mounted on the session (a user's, a test's) or a URL requests would encode keeps the page
        on requests."""
        if self.session.proxies or type(self.session.get_adapter(url)) is not ExactOnlineAdapter:
            return None
        if not is_plain_url(url):
            return None
        reader = self.page_reader
        return reader if reader.serves(url) else None

    @property
    def rate_limiter(self) -> RateLimiter:
        if self._rate_limiter is None:
            self._rate_limiter = build_rate_limiter(self.config, extras_of(self.connection), clock=self.clock)
        return self._rate_limiter

    def get_conn(self) -> requests.Session:
        return self.session

    @property
    def division(self) -> int | None:
        """The division used when a call gives none: the hook's, else the connection's."""
        return self._division if self._division is not None else self.config.division

    @property
    def timezone(self) -> str:
        return self._timezone or self.config.timezone

    @property
    def rate_limit(self) -> RateLimitState:
        """The last known limits of the hook's default division."""
        return self.rate_limiter.state(self.division)

    @property
    def api_calls(self) -> int:
        """HTTP calls this hook made to the API (not counting the token endpoint)."""
        return self._api_calls

    # ------------------------------------------------------------------ HTTP core

    def url(self, path_or_url: str, division: int | None = None) -> str:
        """Absolute URL for a raw API path (``crm/Accounts``), ``current/Me``, or a URL (kept verbatim)."""
        return self.config.api_url(path_or_url, division if division is not None else self.division)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | str | None = None,
        json: Any = None,
        division: int | None = None,
        headers: Mapping[str, str] | None = None,
        purpose: str | None = None,
    ) -> requests.Response:
        """Make one API call (with the waits and retries described in the module docstring).

        ``purpose`` ("read", "write" or "admin") tells the rate limiter what the call is for;
        default: "read" for GET, "write" for anything else.
        """
        url = self.url(path_or_url, division)
        return self._request(
            method.upper(), url, self._encode_params(params), json=json, headers=headers, purpose=purpose
        )

    def _request(
        self,
        method: str,
        url: str,
        query: str | None,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        purpose: str | None = None,
        filter_checked: bool = False,
        page_read: bool = False,
    ) -> requests.Response:
        """:meth:`request` of an absolute URL and an encoded query. ``filter_checked``: the query was
        checked against Exact's mandatory filtering already (a catalog read), or Exact wrote it (a
        ``__next`` link), so it is not parsed again for every page. ``page_read``: an export's page."""
        call = _CallInfo(division_of_url(url), purpose or ("read" if method == "GET" else "write"), page_read=page_read)
        self._check_host(url)
        if method == "GET" and not filter_checked:
            check_raw_collection_filter(url, query)
        # Shared by all attempts: one token swap and MAX_429_RETRIES waits per request, not per attempt.
        try:
            return self._retrying(self._call, method, url, query, json, dict(headers or {}), call)
        except Transient as transient:
            raise transient.error from transient.__cause__

    @cached_property
    def _retrying(self) -> tenacity.Retrying:
        """The retry policy of every call (one per hook: a hook makes one call at a time)."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial
            ),
            retry=tenacity.retry_if_exception_type(Transient),
            sleep=self.clock.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        self.log.warning(
            "Exact Online call failed (attempt %d of %d), retrying in %.1fs: %s",
            state.attempt_number,
            self.max_retries + 1,
            wait,
            error,
        )

    def _check_host(self, url: str) -> None:
        """Refuse to send our bearer token anywhere but the connection's Exact host."""
        target, base = urlsplit(url), urlsplit(self.config.base_url)
        if (target.scheme, target.netloc.lower()) != (base.scheme, base.netloc.lower()):
            raise ExactOnlineConfigError(
                f"Refusing to call {target.scheme}://{target.netloc}: connection {self.config.conn_id!r} "
                f"talks to {self.config.base_url} only (the access token must not leave that host)"
            )

    @staticmethod
    def _encode_params(params: Mapping[str, Any] | str | None) -> str | None:
        """Encode a query with ``%20`` for spaces and ``$ , ' ( ) / :`` kept readable, as OData clients do."""
        if params is None:
            return None
        if isinstance(params, str):
            return params
        items = [(key, value) for key, value in params.items() if value is not None]
        return urlencode(items, quote_via=quote, safe=_QUERY_SAFE) or None

    def _call(
        self, method: str, url: str, query: str | None, json: Any, headers: dict[str, str], call: _CallInfo
    ) -> requests.Response:
        """One attempt as tenacity sees it (the 401 token swap and 429 waits happen inside)."""
        full_url = f"{url}{'&' if '?' in url else '?'}{query}" if query else url
        while True:
            self.rate_limiter.before_call(call.division, purpose=call.purpose)
            token = self.token_manager.access_token()
            mask(token)
            started = time.monotonic()
            sent = {**headers, "Authorization": f"Bearer {token}"}
            reader = self._page_reader_for(full_url) if call.page_read and method == "GET" else None
            try:
                if reader is not None:
                    response = reader.get(full_url, {**cast("Mapping[str, str]", self.session.headers), **sent})
                else:
                    response = self.session.send(
                        self._prepare(method, full_url, json, sent),
                        timeout=(min(10.0, self.timeout), self.timeout),
                        allow_redirects=False,
                        stream=True,  # the body is read below in one go
                        verify=self.session.verify,
                        cert=self.session.cert,
                        proxies=self.session.proxies,  # resolved once, when the session was made
                    )
                    read_body(response)
            except requests.RequestException as err:
                raise transport_error(method, full_url, err) from err
            self._api_calls += 1
            status = response.status_code
            self.rate_limiter.after_call(call.division, response.headers, status)
            if self.log.isEnabledFor(logging.DEBUG):
                self.log.debug(
                    "Exact Online %s %s -> %s (%.0f ms)",
                    method,
                    loggable(full_url),
                    status,
                    (time.monotonic() - started) * 1000,
                )
            if status == 401 and not call.swapped:
                call.swapped = True
                new_token = self.token_manager.on_unauthorized(token)
                if new_token and new_token != token:
                    self.log.info("Exact Online refused the access token; retrying once with a newer one")
                    continue
            if status == 429:
                try:
                    wait = self.rate_limiter.wait_after_429(call.division, response.headers)
                except ExactOnlineRateLimitExceeded as spent:
                    spent.url = spent.url or loggable(full_url)
                    raise
                call.tries_429 += 1
                if call.tries_429 > MAX_429_RETRIES:
                    raise ExactOnlineRateLimitExceeded(
                        f"Exact Online kept answering HTTP 429 (too many requests) to {method} "
                        f"{loggable(full_url)} after {MAX_429_RETRIES} waits for the minutely reset; other "
                        f"processes are probably using the same division. Retry later or spread the load.",
                        scope="minutely",
                        reset_at=self.rate_limiter.state(call.division).minutely_reset,
                        status_code=429,
                        reason=response.headers.get("Reason"),
                        url=loggable(full_url),
                    )
                self.log.warning("Exact Online answered 429; waiting %.1fs for the minutely reset", wait)
                self.clock.sleep(wait)
                continue
            if status >= 500:
                error = http_error(response, method, full_url)
                if method in IDEMPOTENT_METHODS:
                    raise Transient(error)
                raise error
            if status >= 300:
                raise http_error(response, method, full_url)
            return response

    def _prepare(self, method: str, url: str, json: Any, headers: dict[str, str]) -> requests.PreparedRequest:
        """The request ``Session.request`` would send, without its URL parsing where the URL needs none.

        Every page of an export is one call with a long URL (``$select`` of every field, about 2 KB, in each
        ``__next`` link too); requests and urllib3 each re-parse it character by character in Python. A URL
        that is plain ASCII with nothing left to encode (ours, and Exact's ``__next`` links) is used as it is;
        anything else goes through requests' own preparation.
        """
        if not is_plain_url(url):
            return self.session.prepare_request(requests.Request(method, url, headers=headers, json=json))
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        prepared.url = url
        prepared.prepare_headers({**self.session.headers, **headers})
        prepared.prepare_cookies(self.session.cookies)
        prepared.prepare_body(None, None, json)
        return prepared

    # ------------------------------------------------------------------ generic API

    def get(
        self,
        path_or_url: str,
        params: Mapping[str, Any] | str | None = None,
        division: int | None = None,
        *,
        purpose: str = "read",
    ) -> Any:
        """GET and return JSON ``d``: a collection's dict (``results``, ``__next``), an object, or a list."""
        response = self.request("GET", path_or_url, params=params, division=division, purpose=purpose)
        return d_of(response, "GET", response.url)


def read_body(response: requests.Response) -> bytes:
    """Read the whole body in one call and keep it as ``response.content``.

    requests reads a body in 10 KiB chunks through several layers of Python per chunk (about 340
    rounds for a 3.4 MB page of 1,000 Accounts); one ``read()`` lets http.client fetch it at once.
    Failures become the requests exceptions ``.content`` would raise, so retries work as before.
    """
    try:
        body = response.raw.read(decode_content=True) if response.raw is not None else b""
    except urllib3.exceptions.ProtocolError as err:
        response.close()
        raise requests.exceptions.ChunkedEncodingError(err) from err
    except urllib3.exceptions.DecodeError as err:
        response.close()
        raise requests.exceptions.ContentDecodingError(err) from err
    except urllib3.exceptions.ReadTimeoutError as err:
        response.close()
        raise requests.exceptions.ConnectionError(err) from err
    except urllib3.exceptions.SSLError as err:
        response.close()
        raise requests.exceptions.SSLError(err) from err
    # What requests' own ``.content`` stores (it has no public setter).
    response._content = body or b""
    response._content_consumed = True  # type: ignore[attr-defined]
    return response._content


def check_raw_collection_filter(url: str, query: str | None) -> None:
    """Refuse, before the call, a raw collection GET that Exact's mandatory filtering would answer with
    HTTP 400 (one of the 10 errors an hour that block the app); catalog reads are checked the same way."""
    from airflow_provider_exactonline.catalog import resolve_path

    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith((")", "/$count")):
        return  # one record by key, or a count: not a collection read
    spec, variant = resolve_path(parts.path)
    if spec is None:
        return
    pairs = parse_qsl("&".join(q for q in (parts.query, query) if q), keep_blank_values=True)
    filters = [value for key, value in pairs if key == "$filter"]
    spec.check_mandatory_filter(filters[0] if filters else None, variant)
