"""HTTP transport facts shared by the API calls (hook) and the token calls (token manager)."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ProxyError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.ssl_match_hostname import CertificateError


def never_reached_server(error: BaseException) -> bool:
    """True only when the request surely never reached the server, so sending it again is safe.

    Never reached: a refused connection, a DNS failure, a connect timeout (also to a proxy), and a
    TLS handshake that failed on the certificate (nothing is sent before the handshake completes).
    May have reached: read timeouts, dropped connections and resets after sending, and any other
    TLS error (it can happen while the response is read). Re-sending those could rotate Exact's
    refresh token twice (killing the chain) or create a record twice.
    """
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(error, requests.exceptions.ConnectionError):
        return False
    reason: Any = error.args[0] if error.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, ProxyError):
        reason = reason.original_error
    # urllib3 2.x: NewConnectionError (refused, DNS: NameResolutionError) subclasses ConnectTimeoutError.
    if isinstance(reason, (NewConnectionError, ConnectTimeoutError)):
        return True
    if isinstance(reason, Urllib3SSLError):
        reason = reason.args[0] if reason.args else None
    return isinstance(reason, (ssl.SSLCertVerificationError, CertificateError))


class ExactOnlineAdapter(HTTPAdapter):
    """requests' own adapter, with two per-call costs of the generic one left out of every API call.

    An export makes one call a page, thousands in a row to one host; of the client's CPU for a call,
    requests' adapter spent about a fifth (measured: docs/operators.md, "Performance") on

    - working out which urllib3 connection pool serves the URL (the pool key from the URL, the TLS
      settings and the proxies): kept here for the last (origin, TLS, proxies) seen;
    - copying cookies out of every response: Exact's API authenticates every call by its bearer
      token, so cookies are neither kept nor sent (:meth:`build_response` does the rest as requests does).

    Everything else (sending, timeouts, retries of unsent requests, TLS, proxies, the errors raised) is
    the base class's.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._last_pool: tuple[Any, Any] | None = None

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        parts = urlsplit(request.url or "")
        key = (parts.scheme, parts.netloc, verify, cert, tuple(sorted((proxies or {}).items())))
        if self._last_pool is not None:
            last_key, pool = self._last_pool
            if last_key == key and pool.pool is not None:  # a closed pool (adapter closed) has no .pool
                return pool
        pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        self._last_pool = (key, pool)
        return pool

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode("utf-8") if isinstance(req.url, bytes) else str(req.url)
        response.request = req
        response.connection = self
        return response

    def close(self) -> None:
        self._last_pool = None
        super().close()
