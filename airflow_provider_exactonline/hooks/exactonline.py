"""ExactOnlineHook: Exact Online's REST API with tokens, rate limits, retries and typed errors.

One hook = one connection, one ``requests.Session`` and one :class:`RateLimiter` (limits kept
per division). The hook is not thread-safe; give each thread its own.

What the hook does on every call (``request``):

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
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import quote, urlencode, urlsplit

import requests
import tenacity
from airflow.sdk import BaseHook

from airflow_provider_exactonline import __version__, odata
from airflow_provider_exactonline.auth.masking import mask, redact
from airflow_provider_exactonline.clock import SYSTEM_CLOCK, Clock
from airflow_provider_exactonline.config import DEFAULT_CONN_ID, ExactOnlineConfig, extras_of
from airflow_provider_exactonline.exceptions import (
    ExactOnlineAuthError,
    ExactOnlineBadRequest,
    ExactOnlineConfigError,
    ExactOnlineError,
    ExactOnlineNotFound,
    ExactOnlineRateLimitExceeded,
    ExactOnlineResponseError,
    ExactOnlineServerError,
)
from airflow_provider_exactonline.ratelimit import RateLimiter, RateLimitState, build_rate_limiter
from airflow_provider_exactonline.transport import never_reached_server

if TYPE_CHECKING:
    from typing import Unpack

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: How many 429 answers in a row one call may wait out before giving up.
MAX_429_RETRIES = 3
SNIPPET_LENGTH = 200

_QUERY_SAFE = "$,'()/:*"
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")
_DIVISION_IN_PATH_RE = re.compile(r"/api/v1/(\d+)(?:/|$)")


def division_of_url(url: str) -> int | None:
    """The division in an API URL (``.../api/v1/{division}/...``), or None (``current/Me``, token calls)."""
    match = _DIVISION_IN_PATH_RE.search(urlsplit(url).path)
    return int(match.group(1)) if match else None


def snippet(text: str, secrets: Iterable[str | None] = (), length: int = SNIPPET_LENGTH) -> str:
    """A short, one-line, tag-free, redacted excerpt of a response body for error messages."""
    flat = _SPACE_RE.sub(" ", _TAG_RE.sub(" ", text)).strip()
    flat = redact(flat, secrets)
    return flat if len(flat) <= length else flat[: length - 3] + "..."


def _select_list(select: str | Iterable[str] | None) -> list[str] | None:
    if select is None:
        return None
    items = select.split(",") if isinstance(select, str) else list(select)
    fields = [str(item).strip() for item in items if str(item).strip()]
    return fields or None


class QueryOptions(TypedDict, total=False):
    """OData options of the collection calls (see :meth:`ExactOnlineHook.iter_pages`)."""

    select: str | Iterable[str] | None
    filter: str | None
    top: int | None
    orderby: str | None
    skip: int | None


class PageOptions(QueryOptions, total=False):
    """:class:`QueryOptions` and the division to read from."""

    division: int | None


class _Transient(Exception):
    """Internal: a failure worth retrying; ``error`` is what the caller gets when retries run out."""

    def __init__(self, error: ExactOnlineError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclasses.dataclass
class _CallInfo:
    """One ``request``: shared by all its attempts (one token swap and MAX_429_RETRIES waits per
    request, not per attempt)."""

    division: int | None
    purpose: str
    swapped: bool = False
    tries_429: int = 0


class ExactOnlineHook(BaseHook):
    """Talk to Exact Online's REST API through an ``exactonline`` connection.

    :param exactonline_conn_id: the connection (host = region or URL, login = client id,
        password = client secret, extras ``division``, ``redirect_uri`` and the token fields).
    :param division: default division for this hook's calls (overrides the connection's).
    :param token_store: a custom token store (see ``airflow_provider_exactonline.auth``).
    :param timezone: zone used to read ``/Date(ms)/`` values (default: extra ``timezone`` or
        Europe/Amsterdam; see :mod:`airflow_provider_exactonline.odata`).
    :param clock: time source for rate-limit waits and backoff (tests pass a ScaledClock).
    :param max_retries: retries after the first attempt for 5xx and connection errors.
    :param timeout: read timeout of an API call in seconds (connect timeout: at most 10 s).
    :param rate_limiter: a :class:`~airflow_provider_exactonline.ratelimit.RateLimiter` (default:
        :func:`~airflow_provider_exactonline.ratelimit.build_rate_limiter` for the connection).
    """

    conn_name_attr = "exactonline_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "exactonline"
    hook_name = "Exact Online"

    def __init__(
        self,
        exactonline_conn_id: str = default_conn_name,
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
        return self.get_connection(self.exactonline_conn_id)

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
        session = requests.Session()
        session.headers.update(
            {"Accept": "application/json", "User-Agent": f"airflow-provider-exactonline/{__version__}"}
        )
        return session

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
        method = method.upper()
        url = self.url(path_or_url, division)
        call = _CallInfo(division_of_url(url), purpose or ("read" if method == "GET" else "write"))
        self._check_host(url)
        query = self._encode_params(params)
        retryer = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=tenacity.wait_exponential_jitter(
                initial=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial
            ),
            retry=tenacity.retry_if_exception_type(_Transient),
            sleep=self.clock.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        # Shared by all attempts: one token swap and MAX_429_RETRIES waits per request, not per attempt.
        try:
            return retryer(self._call, method, url, query, json, dict(headers or {}), call)
        except _Transient as transient:
            raise transient.error from transient.__cause__

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
            try:
                response = self.session.request(
                    method,
                    full_url,
                    json=json,
                    headers={**headers, "Authorization": f"Bearer {token}"},
                    timeout=(min(10.0, self.timeout), self.timeout),
                    allow_redirects=False,
                )
            except requests.RequestException as err:
                raise self._transport_error(method, full_url, err) from err
            self._api_calls += 1
            status = response.status_code
            self.rate_limiter.after_call(call.division, response.headers, status)
            self.log.debug(
                "Exact Online %s %s -> %s (%.0f ms)",
                method,
                _loggable(full_url),
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
                    spent.url = spent.url or _loggable(full_url)
                    raise
                call.tries_429 += 1
                if call.tries_429 > MAX_429_RETRIES:
                    raise ExactOnlineRateLimitExceeded(
                        f"Exact Online kept answering HTTP 429 (too many requests) to {method} "
                        f"{_loggable(full_url)} after {MAX_429_RETRIES} waits for the minutely reset; other "
                        f"processes are probably using the same division. Retry later or spread the load.",
                        scope="minutely",
                        reset_at=self.rate_limiter.state(call.division).minutely_reset,
                        status_code=429,
                        reason=response.headers.get("Reason"),
                        url=_loggable(full_url),
                    )
                self.log.warning("Exact Online answered 429; waiting %.1fs for the minutely reset", wait)
                self.clock.sleep(wait)
                continue
            if status >= 500:
                error = self._http_error(response, method, full_url)
                if method in IDEMPOTENT_METHODS:
                    raise _Transient(error)
                raise error
            if status >= 300:
                raise self._http_error(response, method, full_url)
            return response

    def _transport_error(self, method: str, url: str, err: requests.RequestException) -> Exception:
        never_sent = never_reached_server(err)
        detail = redact(f"{type(err).__name__}: {err}")[:300]
        if method in IDEMPOTENT_METHODS or never_sent:
            return _Transient(
                ExactOnlineServerError(
                    f"Could not reach Exact Online for {method} {_loggable(url)} ({detail})", url=_loggable(url)
                )
            )
        return ExactOnlineServerError(
            f"The connection failed during {method} {_loggable(url)} ({detail}). The request may have reached "
            f"Exact Online, so it was not re-sent: check in Exact whether it took effect before repeating it.",
            url=_loggable(url),
        )

    def _http_error(self, response: requests.Response, method: str, url: str) -> ExactOnlineError:
        status = response.status_code
        reason = response.headers.get("Reason") or None
        exact_message = _exact_message(response)
        where = f"{method} {_loggable(url)}"
        if exact_message is not None:
            detail = redact(exact_message)
        else:
            body = snippet(response.text) if response.content else ""
            detail = f"body: {body!r}" if body else "empty body"
        message = f"Exact Online answered HTTP {status} to {where}: {detail}"
        if reason:
            message += f" (Reason: {redact(reason)})"
        kwargs: dict[str, Any] = {
            "status_code": status,
            "exact_message": exact_message,
            "reason": reason,
            "url": _loggable(url),
        }
        cls: type[ExactOnlineError]
        if status == 400:
            cls = ExactOnlineBadRequest
        elif status in (401, 403):
            cls = ExactOnlineAuthError
            message += (
                ". Exact refused the access token (a newer one was tried where there was one); check the app's "
                "rights and the user's access to this division in Exact"
                if status == 401
                else ". The user or app has no right to this endpoint or division; check the division and "
                "the user's roles in Exact"
            )
        elif status == 404:
            cls = ExactOnlineNotFound
        elif status >= 500:
            cls = ExactOnlineServerError
        elif 300 <= status < 400:
            cls = ExactOnlineResponseError
            location = urlsplit(response.headers.get("Location", ""))
            message = (
                f"Exact Online redirected {where} (HTTP {status}) to {location.scheme}://{location.netloc}"
                f"{location.path}; an API call should never redirect (wrong host, or a login page)"
            )
        else:
            cls = ExactOnlineBadRequest
        return cls(message, **kwargs)

    def _json(self, response: requests.Response, method: str, url: str) -> Any:
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise ExactOnlineResponseError(
                f"Exact Online answered {method} {_loggable(url)} with HTTP {response.status_code} and a body "
                f"that is not JSON ({kind}): {snippet(response.text)!r}",
                status_code=response.status_code,
                reason=response.headers.get("Reason") or None,
                url=_loggable(url),
            ) from None

    def _d(self, response: requests.Response, method: str, url: str) -> Any:
        payload = self._json(response, method, url)
        if not isinstance(payload, dict) or "d" not in payload:
            raise ExactOnlineResponseError(
                f"Exact Online answered {method} {_loggable(url)} with JSON that has no 'd' member: "
                f"{snippet(str(payload))!r}",
                status_code=response.status_code,
                url=_loggable(url),
            )
        return payload["d"]

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
        return self._d(response, "GET", response.url)

    # ------------------------------------------------------------------ entities

    def _resolve(self, entity: str) -> tuple[Any, str, str]:
        """``entity`` -> (catalog spec or None, variant, path). See :func:`catalog.resolve`: names the
        catalog lacks raise :class:`ExactOnlineUnknownEntity`; raw paths (leading ``/``) always pass."""
        if not str(entity).strip().strip("/"):
            raise ExactOnlineConfigError("entity is empty; give a name such as 'crm/Accounts'")
        from airflow_provider_exactonline import catalog

        spec, variant, path = catalog.resolve(str(entity))
        return spec, variant, path

    def _entity_url(self, spec: Any, variant: str, path: str, division: int | None) -> str:
        if spec is None:
            return self.url(path, division)
        url_path = spec.url_path(variant, division if division is not None else self.division)
        if "{division}" in url_path:
            self.config.api_url(path, None)  # raises the "no division" configuration error
        return f"{self.config.base_url}{url_path}"

    def _query(self, spec: Any, variant: str, **options: Unpack[QueryOptions]) -> dict[str, Any]:
        """OData options, checked against the catalog before any HTTP call.

        With a catalog entity, ``select=None`` or ``"*"`` becomes every field where Exact demands a
        ``$select`` (bulk, sync, a few standard endpoints) and no ``$select`` elsewhere; field names
        in ``$select``/``$filter``/``$orderby`` are checked and put in the catalog's spelling.
        """
        fields = _select_list(options.get("select"))
        filter, orderby = options.get("filter"), options.get("orderby")
        top, skip = options.get("top"), options.get("skip")
        if spec is not None:
            fields = list(spec.expand_select(fields, variant)) or None
            if filter:
                filter = spec.normalize_filter(filter, variant)
            if orderby:
                orderby = spec.normalize_orderby(orderby, variant)
        params: dict[str, Any] = {}
        if fields:
            params["$select"] = ",".join(fields)
        if filter:
            params["$filter"] = filter
        if orderby:
            params["$orderby"] = orderby
        if top is not None:
            params["$top"] = int(top)
        if skip is not None:
            params["$skip"] = int(skip)
        return params

    def iter_pages(
        self,
        entity: str,
        *,
        select: str | Iterable[str] | None = None,
        filter: str | None = None,
        top: int | None = None,
        orderby: str | None = None,
        skip: int | None = None,
        division: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of records, one at a time, following ``d.__next`` verbatim (constant memory).

        Entity and field names are checked against the catalog here, before any HTTP call (not
        lazily on the first ``next()``), so a typo fails where it was made.
        """
        spec, variant, path = self._resolve(entity)
        params = self._query(spec, variant, select=select, filter=filter, top=top, orderby=orderby, skip=skip)
        return self._pages(self._entity_url(spec, variant, path, division), params, path, top)

    def _pages(self, url: str, params: dict[str, Any], path: str, top: int | None) -> Iterator[list[dict[str, Any]]]:
        next_url: str | None = url
        next_params: dict[str, Any] | None = params
        remaining = top
        while next_url:
            d = self.get(next_url, params=next_params)
            next_params = None
            if isinstance(d, list):
                results, next_url = d, None
            elif isinstance(d, dict) and isinstance(d.get("results"), list):
                results, next_url = d["results"], d.get("__next") or None
            else:
                raise ExactOnlineResponseError(
                    f"Exact Online answered GET {path} with 'd' that is not a collection: {snippet(str(d))!r}"
                )
            del d
            if remaining is not None:
                results = results[:remaining]
                remaining -= len(results)
            if results:
                yield results
            if remaining is not None and remaining <= 0:
                return

    def iter_records(
        self, entity: str, *, convert_dates: bool = False, **options: Unpack[PageOptions]
    ) -> Iterator[dict[str, Any]]:
        """Yield records one by one; ``options`` are those of :meth:`iter_pages` (``select``, ``filter``,
        ``top``, ``orderby``, ``skip``, ``division``).

        Values are as Exact sent them, so exports are lossless; ``convert_dates=True`` turns
        ``/Date(ms)/`` strings into pendulum datetimes in :attr:`timezone`.
        """
        pages = self.iter_pages(entity, **options)
        return self._records(pages, self.timezone if convert_dates else None)

    @staticmethod
    def _records(pages: Iterator[list[dict[str, Any]]], tz: str | None) -> Iterator[dict[str, Any]]:
        for page in pages:
            for record in page:
                yield odata.convert_dates(record, tz) if tz else record

    def _key_url(self, entity: str, guid: Any, division: int | None) -> tuple[Any, str, str]:
        spec, variant, path = self._resolve(entity)
        if spec is not None and variant != "standard":
            if not spec.has_variant("standard"):
                raise ExactOnlineConfigError(
                    f"{spec.qualified_name} has no standard endpoint; single-record calls need one (got {entity!r})"
                )
            variant, path = "standard", spec.path
        return spec, variant, f"{self._entity_url(spec, variant, path, division)}({odata.guid(guid)})"

    def get_record(
        self,
        entity: str,
        guid: Any,
        *,
        select: str | Iterable[str] | None = None,
        division: int | None = None,
    ) -> dict[str, Any]:
        """One record by its GUID key; :class:`ExactOnlineNotFound` when it does not exist."""
        spec, variant, url = self._key_url(entity, guid, division)
        params = self._query(spec, variant, select=select)
        d = self.get(url, params=params)
        if isinstance(d, dict) and isinstance(d.get("results"), list):
            d = d["results"]
        if isinstance(d, list):
            if not d:
                raise ExactOnlineNotFound(f"No {entity} with ID {guid}", status_code=404, url=_loggable(url))
            d = d[0]
        if not isinstance(d, dict):
            raise ExactOnlineResponseError(f"Exact Online answered GET {entity}({guid}) with a non-object 'd'")
        return d

    def create(self, entity: str, data: Mapping[str, Any], *, division: int | None = None) -> dict[str, Any]:
        """POST a new record and return it as Exact stored it. Never re-sent once it may have arrived."""
        spec, variant, path = self._resolve(entity)
        if spec is not None and variant != "standard" and spec.has_variant("standard"):
            variant, path = "standard", spec.path
        url = self._entity_url(spec, variant, path, division)
        response = self.request("POST", url, json=dict(data), headers={"Prefer": "return=representation"})
        if response.status_code == 204 or not response.content:
            return {}
        d = self._d(response, "POST", url)
        if isinstance(d, dict) and isinstance(d.get("results"), list) and len(d["results"]) == 1:
            d = d["results"][0]
        return d if isinstance(d, dict) else {"d": d}

    def update(self, entity: str, guid: Any, data: Mapping[str, Any], *, division: int | None = None) -> None:
        """PUT changed fields of one record (Exact answers 204)."""
        _spec, _variant, url = self._key_url(entity, guid, division)
        self.request("PUT", url, json=dict(data))

    def delete(self, entity: str, guid: Any, *, division: int | None = None) -> None:
        """DELETE one record (Exact answers 204)."""
        _spec, _variant, url = self._key_url(entity, guid, division)
        self.request("DELETE", url)

    def count(self, entity: str, *, filter: str | None = None, division: int | None = None) -> int:
        """``{entity}/$count``, optionally filtered."""
        spec, variant, path = self._resolve(entity)
        params = self._query(spec, variant, filter=filter)
        url = f"{self._entity_url(spec, variant, path, division)}/$count"
        response = self.request("GET", url, params=params)
        text = response.text.strip()
        try:
            value: Any = response.json()
        except ValueError:
            value = text
        if isinstance(value, dict):
            value = value.get("d", value)
            if isinstance(value, dict):
                value = value.get("__count", value.get("Count", value))
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ExactOnlineResponseError(
                f"Exact Online answered GET {_loggable(url)} with a count that is not a number: {snippet(text)!r}",
                status_code=response.status_code,
                url=_loggable(url),
            ) from None

    # ------------------------------------------------------------------ account

    def current_user(self, *, purpose: str = "read") -> dict[str, Any]:
        """``current/Me``: the authorized user, including ``CurrentDivision``."""
        d = self.get("current/Me", purpose=purpose)
        if isinstance(d, dict) and isinstance(d.get("results"), list):
            d = d["results"]
        if isinstance(d, list):
            d = d[0] if d else None
        if not isinstance(d, dict):
            raise ExactOnlineResponseError("Exact Online answered current/Me without a user")
        return d

    def divisions(self) -> list[dict[str, Any]]:
        """``system/Divisions`` (the divisions of the user's company), read in the default division,
        or in ``Me.CurrentDivision`` when neither hook nor connection sets one."""
        division = self.division
        if division is None:
            division = int(self.current_user()["CurrentDivision"])
        return list(self.iter_records("system/Divisions", division=division))

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's Test button: call ``current/Me``. A token rotation it causes is persisted by the
        token manager before this returns, into the stores of the *stored* connection (see
        :meth:`_original_conn_id`), so testing never strands the connection on a spent refresh token.
        A connection without tokens is reported as not authorized, without any call to Exact."""
        try:
            copy = False
            if "token_manager" not in self.__dict__ and self._token_store is None:
                copy, self._token_conn_id = self._test_copy_origin()
            if self.token_manager.reload() is None:
                target = self._token_conn_id or ("<connection id>" if copy else self.exactonline_conn_id)
                return False, (
                    f"not authorized yet: connect it at /exactonline or run `airflow-exactonline authorize {target}`"
                )
            me = self.current_user(purpose="admin")
        except Exception as err:
            return False, redact(str(err))
        name = me.get("FullName") or me.get("UserName") or "unknown user"
        return True, f"Connected to {self.config.base_url} as {name} (current division {me.get('CurrentDivision')})"

    def _original_conn_id(self) -> str | None:
        """The stored connection that the api-server's Test button copied to a throw-away conn_id (see
        :meth:`_test_copy_origin`), or None."""
        return self._test_copy_origin()[1]

    def _test_copy_origin(self) -> tuple[bool, str | None]:
        """(is this hook's connection a Test-button copy, the stored connection it was copied from).

        ``POST /api/v2/connections/test`` exports the form (merged with the stored connection) as
        ``AIRFLOW_CONN_<random>`` and builds the hook with that random id. A refresh would then rotate
        the pair but persist it under the random id, killing the stored refresh token. So when our
        conn_id exists only in an env var and the metadata DB has exactly one ``exactonline``
        connection with the same refresh token, use that one's token stores. Without a refresh token
        in the form there is no match: borrowing another connection's tokens would report a connection
        that was never authorized as working. Only in processes that may use the ORM (the api-server);
        never raises.
        """
        conn_id = self.exactonline_conn_id
        if f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ:
            return False, None
        try:
            from airflow_provider_exactonline.auth import process_context

            if process_context.process_kind() != process_context.ORM:
                return False, None
            from airflow.models import Connection
            from airflow.utils.session import create_session

            ours = extras_of(self.connection).get("refresh_token")
            with create_session() as session:
                if session.query(Connection.id).filter(Connection.conn_id == conn_id).first() is not None:
                    return False, None
                rows = session.query(Connection).filter(Connection.conn_type == self.conn_type).all()
                same_token = [row.conn_id for row in rows if ours and row.extra_dejson.get("refresh_token") == ours]
        except Exception as err:
            self.log.debug("Could not look up the stored connection behind %s: %s", conn_id, type(err).__name__)
            return False, None
        return True, same_token[0] if len(same_token) == 1 else None


def _exact_message(response: requests.Response) -> str | None:
    """Exact's ``{"error": {"message": {"value": ...}}}`` text, if the body has it."""
    try:
        payload = response.json()
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, dict):
            value = message.get("value")
            return str(value) if value is not None else None
        if isinstance(message, str):
            return message
    if isinstance(payload.get("error_description"), str):
        return str(payload["error_description"])
    return None


def _loggable(url: str) -> str:
    """The URL without scheme/host, shortened: enough to say which call failed."""
    parts = urlsplit(url)
    text = parts.path + (f"?{parts.query}" if parts.query else "")
    return text if len(text) <= 300 else text[:297] + "..."
