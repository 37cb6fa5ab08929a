"""What an Exact Online answer, or a failed send, means: typed errors with redacted, short messages."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from airflow_provider_exactonline.auth.masking import redact
from airflow_provider_exactonline.exceptions import (
    ExactOnlineAuthError,
    ExactOnlineBadRequest,
    ExactOnlineError,
    ExactOnlineNotFound,
    ExactOnlineOutcomeUnknown,
    ExactOnlineResponseError,
    ExactOnlineServerError,
)
from airflow_provider_exactonline.transport import never_reached_server

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
SNIPPET_LENGTH = 200

#: Why a failed POST is not sent again, by the hook or by Airflow's task retries.
_NOT_RESENT = (
    "The request may have reached Exact Online, so it was not re-sent, and this error fails the task "
    "without Airflow retries: check in Exact whether it took effect before repeating it."
)

_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")


def snippet(text: str, secrets: Iterable[str | None] = (), length: int = SNIPPET_LENGTH) -> str:
    """A short, one-line, tag-free, redacted excerpt of a response body for error messages."""
    flat = _SPACE_RE.sub(" ", _TAG_RE.sub(" ", text)).strip()
    flat = redact(flat, secrets)
    return flat if len(flat) <= length else flat[: length - 3] + "..."


class Transient(Exception):
    """Internal: a failure worth retrying; ``error`` is what the caller gets when retries run out."""

    def __init__(self, error: ExactOnlineError) -> None:
        super().__init__(str(error))
        self.error = error


def transport_error(method: str, url: str, err: requests.RequestException) -> Exception:
    never_sent = never_reached_server(err)
    detail = redact(f"{type(err).__name__}: {err}")[:300]
    if method in IDEMPOTENT_METHODS or never_sent:
        return Transient(
            ExactOnlineServerError(
                f"Could not reach Exact Online for {method} {loggable(url)} ({detail})", url=loggable(url)
            )
        )
    return ExactOnlineOutcomeUnknown(
        f"The connection failed during {method} {loggable(url)} ({detail}). {_NOT_RESENT}", url=loggable(url)
    )


def http_error(response: requests.Response, method: str, url: str) -> ExactOnlineError:
    status = response.status_code
    reason = response.headers.get("Reason") or None
    exact_message = exact_error_message(response)
    where = f"{method} {loggable(url)}"
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
        "url": loggable(url),
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
    elif status >= 500 and method not in IDEMPOTENT_METHODS:
        cls = ExactOnlineOutcomeUnknown
        message += f". {_NOT_RESENT}"
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


def json_of(response: requests.Response, method: str, url: str) -> Any:
    try:
        return orjson.loads(response.content)  # a 1,000-row page decodes several times faster than with json
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        pass
    try:
        return response.json()  # other encodings (a BOM, UTF-16), as requests detects them
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type")
        raise ExactOnlineResponseError(
            f"Exact Online answered {method} {loggable(url)} with HTTP {response.status_code} and a body "
            f"that is not JSON ({kind}): {snippet(response.text)!r}",
            status_code=response.status_code,
            reason=response.headers.get("Reason") or None,
            url=loggable(url),
        ) from None


def d_of(response: requests.Response, method: str, url: str) -> Any:
    payload = json_of(response, method, url)
    if not isinstance(payload, dict) or "d" not in payload:
        raise ExactOnlineResponseError(
            f"Exact Online answered {method} {loggable(url)} with JSON that has no 'd' member: "
            f"{snippet(str(payload))!r}",
            status_code=response.status_code,
            url=loggable(url),
        )
    return payload["d"]


def exact_error_message(response: requests.Response) -> str | None:
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


def loggable(url: str) -> str:
    """The URL without scheme/host, shortened: enough to say which call failed."""
    parts = urlsplit(url)
    text = parts.path + (f"?{parts.query}" if parts.query else "")
    return text if len(text) <= 300 else text[:297] + "..."
