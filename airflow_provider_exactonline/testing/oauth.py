"""The fake's OAuth2: the consent page, authorization codes and the single-use refresh token chain."""

from __future__ import annotations

import base64
import contextlib
import html
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

from airflow_provider_exactonline.testing.http import Response, html_page, json_bytes, utc_text

if TYPE_CHECKING:
    from airflow_provider_exactonline.testing.server import FakeExactOnline

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class TokenCall:
    """One call to ``/api/oauth2/token``. ``outcome`` is ``"ok"`` or the error kind."""

    grant_type: str
    status: int
    outcome: str
    time: float


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class OAuthServer:
    """The token state of one fake; reads its settings (client, lifetimes, limits) from ``fake``.

    Callers hold ``fake._lock`` around anything that reads or changes the state.
    """

    def __init__(self, fake: FakeExactOnline) -> None:
        self.fake = fake
        self.codes: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, float] = {}  # token -> expires_at (current chain only)
        self.old_refresh_tokens: set[str] = set()
        self.chain: dict[str, Any] | None = None
        self.token_chain: list[dict[str, Any]] = []
        self.token_day_calls: dict[int, int] = {}
        self.token_calls: list[TokenCall] = []

    def issue_tokens(self) -> dict[str, Any]:
        """Mint a token pair as a completed authorization would (replacing the chain); returns the token JSON."""
        with self.fake._lock:
            return self.new_chain(self.fake.clock.time())

    def _mint(self, now: float) -> dict[str, Any]:
        access = "AAEA" + secrets.token_urlsafe(48)
        refresh = "__1P!I" + secrets.token_urlsafe(32)
        expires_at = now + self.fake.access_token_lifetime
        self.access_tokens[access] = expires_at
        self.chain = {
            "access_token": access,
            "refresh_token": refresh,
            "issued_at": now,
            "expires_at": expires_at,
            "refresh_issued_at": now,
        }
        self.token_chain.append(dict(self.chain))
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": _fmt_seconds(self.fake.access_token_lifetime),
            "refresh_token": refresh,
        }

    def new_chain(self, now: float) -> dict[str, Any]:
        if self.chain:
            self.old_refresh_tokens.add(self.chain["refresh_token"])
        self.access_tokens.clear()
        self.token_chain = []
        return self._mint(now)

    def _redirect_ok(self, redirect_uri: str) -> bool:
        if redirect_uri in self.fake.redirect_uris:
            return True
        if not self.fake.allow_any_loopback_redirect:
            return False
        parts = urlsplit(redirect_uri)
        return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS

    def auth_page(self, method: str, params: dict[str, str]) -> Response:
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        state = params.get("state", "")
        if client_id != self.fake.client_id:
            return html_page(400, "Unknown application", "The client_id is not a registered app.")
        if not redirect_uri or not self._redirect_ok(redirect_uri):
            return html_page(
                400, "Invalid redirect URI", "The redirect_uri does not match the app's registered redirect URI."
            )
        if params.get("response_type", "code") != "code":
            return html_page(400, "Unsupported response type", "Only response_type=code is supported.")
        action = params.get("action")
        if method == "GET" and not self.fake.auto_approve:
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
            return Response(200, body.encode(), "text/html; charset=utf-8")
        sep = "&" if "?" in redirect_uri else "?"
        if action == "deny":
            location = redirect_uri + sep + urlencode({"error": "access_denied", "state": state})
        else:
            code = secrets.token_urlsafe(24)
            with self.fake._lock:
                self.codes[code] = {
                    "redirect_uri": redirect_uri,
                    "client_id": client_id,
                    "issued_at": self.fake.clock.time(),
                    "used": False,
                }
            location = redirect_uri + sep + urlencode({"code": code, "state": state})
        return Response(302, b"", "text/html; charset=utf-8", [("Location", location)])

    def token_endpoint(self, headers: Mapping[str, str], body: bytes) -> Response:
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        grant = form.get("grant_type", "")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            with contextlib.suppress(Exception):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                client_id, secret = client_id or unquote_plus(user), secret or unquote_plus(password)
        now = self.fake.clock.time()
        with self.fake._lock:
            day = int(now // 86_400)
            used = self.token_day_calls.get(day, 0)
            self.token_day_calls[day] = used + 1
            if self.fake.token_calls_per_day is not None and used >= self.fake.token_calls_per_day:
                return self._token_error(
                    grant,
                    400,
                    "rate_limited",
                    "access_denied",
                    f"Rate limit exceeded: more than {self.fake.token_calls_per_day} token requests today",
                    reason="TooManyTokenRequests",
                )
            if client_id != self.fake.client_id or secret != self.fake.client_secret:
                return self._token_error(grant, 401, "invalid_client", "invalid_client", "Invalid client credentials.")
            if grant == "authorization_code":
                code = self.codes.get(form.get("code", ""))
                if code is None or code["used"]:
                    return self._token_error(grant, 400, "invalid_code", "invalid_grant", "Invalid or used code.")
                code["used"] = True
                if now > code["issued_at"] + self.fake.authorization_code_lifetime:
                    return self._token_error(grant, 400, "code_expired", "invalid_grant", "The code has expired.")
                if form.get("redirect_uri") != code["redirect_uri"]:
                    return self._token_error(
                        grant, 400, "redirect_mismatch", "invalid_grant", "redirect_uri does not match."
                    )
                token = self.new_chain(now)
                self.token_calls.append(TokenCall(grant, 200, "ok", now))
                return Response(200, json_bytes(token), "application/json", [("Cache-Control", "no-store")])
            if grant == "refresh_token":
                presented = form.get("refresh_token", "")
                chain = self.chain
                if chain is None or presented != chain["refresh_token"]:
                    if presented in self.old_refresh_tokens:
                        return self._token_error(
                            grant, 401, "old_refresh_token", "unauthorized_client", "Old refresh token used."
                        )
                    return self._token_error(grant, 400, "invalid_grant", "invalid_grant", "Invalid refresh token.")
                expires = chain["refresh_issued_at"] + self.fake.refresh_token_lifetime
                if now > expires:
                    return self._token_error(
                        grant,
                        400,
                        "refresh_token_expired",
                        "invalid_request",
                        f"The refresh token expired at {utc_text(expires)} and it is now {utc_text(now)}.",
                    )
                if chain["expires_at"] - now > self.fake.refresh_window:
                    return self._token_error(
                        grant,
                        400,
                        "too_early",
                        "access_denied",
                        "Rate limit exceeded: access_token not expired",
                        reason="TooEarlyToRefreshTokens",
                    )
                self.old_refresh_tokens.add(presented)
                token = self._mint(now)
                self.token_calls.append(TokenCall(grant, 200, "ok", now))
                return Response(200, json_bytes(token), "application/json", [("Cache-Control", "no-store")])
            return self._token_error(
                grant,
                400,
                "unsupported_grant_type",
                "unsupported_grant_type",
                f"grant_type {grant!r} is not supported.",
            )

    def _token_error(
        self, grant: str, status: int, outcome: str, error: str, description: str, reason: str | None = None
    ) -> Response:
        self.token_calls.append(TokenCall(grant, status, outcome, self.fake.clock.time()))
        headers = [("Reason", reason)] if reason else []
        return Response(
            status, json_bytes({"error": error, "error_description": description}), "application/json", headers
        )
