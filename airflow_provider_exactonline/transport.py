"""HTTP transport: which failed requests surely never reached the server, requests' adapter for API calls,
and the reader of export pages."""

from __future__ import annotations

import http.client
import os
import ssl
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_encoding_from_headers
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


class PageReader:
    """GETs of export pages over one kept-alive connection of the standard library's ``http.client``.

    An export makes one GET a page, thousands in a row to one host. requests and urllib3 each parse the
    URL, check every header and wrap the answer again on every call: that cost about as much client CPU
    as ``http.client``'s own work, about 0.5 ms a page of the 3-4 ms a 1,000-row page of ten fields
    costs in all (docs/operators.md, "Performance"). The hook reads export pages through this reader
    where the connection is direct (no proxy) and its own adapter is mounted; every other call goes
    through requests. The reader keeps requests' TLS settings (``verify``, ``cert``, certifi's CA
    bundle by default) and its timeouts, asks for gzip/deflate as requests does and decodes them, and
    reports any failure as a ``requests.ConnectionError``, which the hook retries as it does any
    failed GET.
    """

    ACCEPT_ENCODING = "gzip, deflate"

    def __init__(self, base_url: str, *, verify: Any = True, cert: Any = None, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self._host, self._port = parts.hostname, parts.port
        self._context = _tls_context(verify, cert) if parts.scheme == "https" else None
        self._timeout = float(timeout)
        self._connection: http.client.HTTPConnection | None = None
        #: Connections opened so far (one for a whole export, unless the server closed one).
        self.connections = 0

    def serves(self, url: str) -> bool:
        return url.startswith(self.origin) and url[len(self.origin) : len(self.origin) + 1] in ("/", "?", "")

    def get(self, url: str, headers: Mapping[str, str]) -> requests.Response:
        """GET ``url`` (on this reader's origin, see :meth:`serves`) and read the whole answer."""
        target = url[len(self.origin) :] or "/"
        sent = {**headers, "Accept-Encoding": self.ACCEPT_ENCODING}
        for attempt in (1, 2):
            connection, reused = self._open()
            try:
                connection.request("GET", target, headers=sent)
                answer = connection.getresponse()
                body = answer.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as err:
                self.close()
                if reused and attempt == 1:
                    continue  # the server had closed the kept-alive connection: the GET again on a new one
                raise requests.exceptions.ConnectionError(err) from err
            except (OSError, http.client.HTTPException, ssl.SSLError) as err:
                self.close()
                raise requests.exceptions.ConnectionError(err) from err
            if answer.will_close:
                self.close()
            return _response(url, answer, _decoded(body, answer.getheader("Content-Encoding")))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _open(self) -> tuple[http.client.HTTPConnection, bool]:
        if self._connection is not None:
            return self._connection, True
        connect_timeout = min(10.0, self._timeout)
        if self._context is not None:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=connect_timeout, context=self._context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=connect_timeout)
        try:
            connection.connect()
        except (OSError, ssl.SSLError) as err:
            connection.close()
            raise requests.exceptions.ConnectionError(err) from err
        if connection.sock is not None:
            connection.sock.settimeout(self._timeout)  # reads: the hook's timeout, as requests' (connect, read)
        self._connection = connection
        self.connections += 1
        return connection, False

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _tls_context(verify: Any, cert: Any) -> ssl.SSLContext:
    """requests' TLS settings as an ``ssl`` context: ``verify`` False, True (certifi) or a CA file or
    directory; ``cert`` a client certificate file or a (certificate, key) pair."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        bundle = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
        context = ssl.create_default_context(
            cafile=None if os.path.isdir(bundle) else bundle, capath=bundle if os.path.isdir(bundle) else None
        )
    if cert:
        context.load_cert_chain(*(cert if isinstance(cert, (tuple, list)) else (cert,)))
    return context


def _decoded(body: bytes, encoding: str | None) -> bytes:
    coding = (encoding or "identity").strip().lower()
    try:
        if coding == "gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if coding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
    except zlib.error as err:
        raise requests.exceptions.ContentDecodingError(err) from err
    if coding != "identity":
        raise requests.exceptions.ContentDecodingError(f"unexpected Content-Encoding {encoding!r}")
    return body


def _response(url: str, answer: http.client.HTTPResponse, body: bytes) -> requests.Response:
    """The answer as the requests.Response the rest of the hook reads (headers case-insensitive, a
    header sent twice joined with ", " as urllib3 does)."""
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for name, value in answer.getheaders():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    response = requests.Response()
    response.status_code = answer.status
    response.headers = headers
    response.encoding = get_encoding_from_headers(headers)
    response.reason = answer.reason
    response.url = url
    response._content = body
    response._content_consumed = True  # type: ignore[attr-defined]
    return response
