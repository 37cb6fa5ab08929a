"""HTTP transport facts shared by the API calls (hook) and the token calls (token manager)."""

from __future__ import annotations

import ssl
from typing import Any

import requests
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
