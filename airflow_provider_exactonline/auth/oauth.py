"""OAuth2 mechanics for Exact Online, through requests-oauthlib.

Used by the TokenManager (refresh grant), the "Connect to Exact Online" UI plugin and the CLI
(authorization URL + code exchange). Exact specifics handled here:

* client_id and client_secret go in the form body (``include_client_id=True``), not Basic auth;
* ``expires_in`` is a string (oauthlib parses it; TokenState.from_token_response as well);
* error answers are classified from the HTTP status, Exact's ``error_description`` and the
  ``Reason`` header by a compliance hook, before oauthlib would turn them into generic errors.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests_oauthlib import OAuth2Session

from airflow_provider_exactonline.auth.masking import mask, redact
from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.clock import SYSTEM_CLOCK, Clock
from airflow_provider_exactonline.exceptions import (
    ExactOnlineAuthError,
    ExactOnlineError,
    ExactOnlineReauthorizationRequired,
    ExactOnlineServerError,
)

log = logging.getLogger(__name__)

DEFAULT_TOKEN_TIMEOUT = 120.0
CONNECT_TIMEOUT = 10.0


# --- error classification ----------------------------------------------------------------------
class TokenEndpointError(ExactOnlineAuthError):
    """Internal: a non-2xx answer from the token endpoint, before classification."""


class TooEarlyToRefresh(ExactOnlineAuthError):
    """Exact: the current access token has not expired yet (400 access_denied / 401, Reason TooEarlyToRefreshTokens)."""


class OldRefreshTokenUsed(ExactOnlineReauthorizationRequired):
    """Exact: 401 unauthorized_client "Old refresh token used." - another process rotated the pair."""


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def classify_token_error(response: requests.Response, conn_id: str, grant: str) -> ExactOnlineError:
    """Map an error answer of ``/api/oauth2/token`` to a typed exception (never containing a secret)."""
    status = response.status_code
    reason = response.headers.get("Reason") or None
    body = _json(response)
    error = str(body.get("error") or "")
    description = str(body.get("error_description") or body.get("message") or "")
    if not body:
        snippet = " ".join((response.text or "").split())[:200]
        description = f"non-JSON answer: {snippet!r}" if snippet else "empty answer"
    description = redact(description, oauth=True)
    exact_message = f"{error}: {description}".strip(": ")
    text = f"{error} {description} {reason or ''}".lower()
    kwargs: dict[str, Any] = {
        "status_code": status,
        "exact_message": exact_message,
        "reason": reason,
        "url": response.url,
    }
    if "tooearlytorefreshtokens" in text or "not expired" in text:
        return TooEarlyToRefresh(
            f"Exact refused the {grant} for connection {conn_id!r}: the access token has not expired yet "
            f"(HTTP {status} {exact_message})",
            **kwargs,
        )
    if "old refresh token" in text:
        return OldRefreshTokenUsed(
            conn_id, "the refresh token was already used (Exact: 'Old refresh token used.')", **kwargs
        )
    if "refresh token" in text and "expired" in text:
        return ExactOnlineReauthorizationRequired(
            conn_id, f"the refresh token expired (Exact: {description})", **kwargs
        )
    if error == "invalid_client" or "client_secret" in text or "client secret" in text:
        return ExactOnlineAuthError(
            f"Exact rejected the client credentials of connection {conn_id!r} (HTTP {status} {exact_message}); "
            f"check 'Client secret' (password) and 'Client ID' (login) against Exact's App Center",
            **kwargs,
        )
    if grant == "code exchange" and (error == "invalid_grant" or "code" in text):
        return ExactOnlineAuthError(
            f"Exact refused the authorization code for connection {conn_id!r} (HTTP {status} {exact_message}); "
            f"codes are valid for a few minutes and only once: start the authorization again",
            **kwargs,
        )
    if error in ("invalid_grant", "unauthorized_client"):
        return ExactOnlineReauthorizationRequired(
            conn_id, f"Exact refused the refresh token ({exact_message})", **kwargs
        )
    if status >= 500:
        return ExactOnlineServerError(
            f"Exact's token endpoint failed for connection {conn_id!r}: HTTP {status} {exact_message}", **kwargs
        )
    return ExactOnlineAuthError(
        f"Exact refused the {grant} for connection {conn_id!r}: HTTP {status} {exact_message}", **kwargs
    )


def _raise_on_error(conn_id: str, grant: str) -> Callable[[requests.Response], requests.Response]:
    def hook(response: requests.Response) -> requests.Response:
        if not 200 <= response.status_code < 300:
            raise classify_token_error(response, conn_id, grant)
        return response

    return hook


# --- transport -----------------------------------------------------------------------------------
def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _PlainHttpAdapter(BaseAdapter):
    """Sends a request that oauthlib saw as ``https://host/...`` to ``http://host/...`` (see ``_for_oauthlib``)."""

    def __init__(self, inner: BaseAdapter) -> None:
        super().__init__()
        self.inner = inner

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        request.url = "http://" + str(request.url)[len("https://") :]
        return self.inner.send(request, *args, **kwargs)

    def close(self) -> None:
        self.inner.close()


def _for_oauthlib(oauth: OAuth2Session, url: str) -> str:
    """``url`` as oauthlib may see it. oauthlib refuses plain http unless the process-wide
    OAUTHLIB_INSECURE_TRANSPORT is set, which would lower the guard for every thread. The connection's
    URL is the user's explicit choice (a local fake server, a test proxy), so for a plain-http URL we
    give oauthlib the https spelling and route it back to http on this session only (warning when it
    is not a loopback address)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return url
    if not _is_loopback(parts.hostname):
        log.warning("Exact Online URL %s is plain http; tokens travel unencrypted", f"{parts.scheme}://{parts.netloc}")
    oauth.mount(f"https://{parts.netloc}/", _PlainHttpAdapter(oauth.get_adapter(url)))
    return "https" + url[len("http") :]


def new_oauth_session(
    config: Any,
    *,
    redirect_uri: str | None = None,
    state: str | None = None,
    token: dict[str, Any] | None = None,
    base_session: requests.Session | None = None,
) -> OAuth2Session:
    oauth = OAuth2Session(config.client_id, redirect_uri=redirect_uri, state=state, token=token)
    if base_session is not None:  # reuse its adapters (pooling, test adapters), TLS and proxy settings
        for prefix, adapter in base_session.adapters.items():
            oauth.mount(prefix, adapter)
        oauth.verify = base_session.verify
        oauth.cert = base_session.cert
        oauth.proxies = dict(base_session.proxies)
        oauth.trust_env = base_session.trust_env
    oauth.headers["Accept"] = "application/json"
    return oauth


# --- authorization-code flow (UI plugin, CLI) ----------------------------------------------------
def _redirect_uri(config: Any, redirect_uri: str | None) -> str:
    uri = redirect_uri or getattr(config, "redirect_uri", None)
    if not uri:
        from airflow_provider_exactonline.exceptions import ExactOnlineConfigError

        raise ExactOnlineConfigError(
            f"Connection {config.conn_id!r} has no redirect_uri; set extra 'redirect_uri' to the URL registered "
            f"in Exact's App Center"
        )
    return str(uri)


def authorization_url(config: Any, state: str, redirect_uri: str | None = None, force_login: bool = False) -> str:
    """The URL to send the user to: ``{base}/api/oauth2/auth?client_id&redirect_uri&response_type=code&state``."""
    oauth = new_oauth_session(config, redirect_uri=_redirect_uri(config, redirect_uri), state=state)
    seen = _for_oauthlib(oauth, config.auth_url)
    url, _state = oauth.authorization_url(seen, force_login="1" if force_login else "0")
    return config.auth_url + str(url)[len(seen) :]


def _request_token(
    config: Any, oauth: OAuth2Session, grant: str, clock: Clock, call: Callable[[str], Any]
) -> TokenState:
    """One token-endpoint call, ``call(token_url)``: error answers classified, the new pair masked."""
    hook = "access_token_response" if grant == "code exchange" else "refresh_token_response"
    oauth.register_compliance_hook(hook, _raise_on_error(config.conn_id, grant))
    try:
        token = call(_for_oauthlib(oauth, config.token_url))
    except (ExactOnlineError, requests.RequestException):
        raise
    except Exception as err:  # oauthlib parsing errors on a 2xx answer
        raise ExactOnlineAuthError(
            f"Exact's answer to the {grant} for connection {config.conn_id!r} is not a token: "
            f"{redact(str(err), oauth=True)[:200]}"
        ) from None
    state = TokenState.from_token_response(dict(token), clock.time())
    mask(state.access_token, state.refresh_token)
    return state


def exchange_code(
    config: Any,
    code: str,
    redirect_uri: str | None = None,
    *,
    timeout: float = DEFAULT_TOKEN_TIMEOUT,
    clock: Clock = SYSTEM_CLOCK,
    session: requests.Session | None = None,
) -> TokenState:
    """Trade an authorization code for the first token pair. Errors -> ExactOnlineAuthError with Exact's message."""
    mask(config.client_secret, code)
    oauth = new_oauth_session(config, redirect_uri=_redirect_uri(config, redirect_uri), base_session=session)
    try:
        return _request_token(
            config,
            oauth,
            "code exchange",
            clock,
            lambda url: oauth.fetch_token(
                url,
                code=code,
                client_secret=config.client_secret,
                include_client_id=True,
                timeout=(CONNECT_TIMEOUT, timeout),
            ),
        )
    except requests.RequestException as err:
        raise ExactOnlineAuthError(
            f"Could not reach Exact's token endpoint for connection {config.conn_id!r}: {type(err).__name__}"
        ) from None


def refresh_grant(
    config: Any,
    refresh_token: str,
    *,
    timeout: float = DEFAULT_TOKEN_TIMEOUT,
    clock: Clock = SYSTEM_CLOCK,
    session: requests.Session | None = None,
) -> TokenState:
    """One POST of the refresh grant (no retries here). Raises the classified errors above."""
    mask(config.client_secret, refresh_token)
    oauth = new_oauth_session(
        config, token={"refresh_token": refresh_token, "token_type": "bearer"}, base_session=session
    )
    return _request_token(
        config,
        oauth,
        "token refresh",
        clock,
        lambda url: oauth.refresh_token(
            url,
            refresh_token=refresh_token,
            client_id=config.client_id,
            client_secret=config.client_secret,
            include_client_id=True,
            timeout=(CONNECT_TIMEOUT, timeout),
        ),
    )
