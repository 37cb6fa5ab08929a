"""Mask tokens and secrets the moment we see them.

Two layers: Airflow's secrets masker (task logs, UI) via ``mask_secret``, and a redacting filter on
the ``requests_oauthlib`` logger, which at DEBUG level prints token request bodies and responses
(refresh token, client secret) into any handler, including ones Airflow's masker does not wrap.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

_known: set[str] = set()
_known_lock = threading.Lock()
_MIN_LEN = 6  # never redact short, common strings


def _find_mask_secret() -> Any:
    try:  # Airflow 3.x public Task SDK API
        from airflow.sdk.log import mask_secret

        return mask_secret
    except ImportError:  # pragma: no cover - older layouts
        pass
    try:  # pragma: no cover
        from airflow.sdk.execution_time.secrets_masker import mask_secret as legacy

        return legacy
    except ImportError:  # pragma: no cover
        return None


_airflow_mask_secret = _find_mask_secret()


def mask(*secrets: Any) -> None:
    """Register secrets with Airflow's masker and our redacting filter. ``None``/short values are skipped."""
    for secret in secrets:
        if not isinstance(secret, str) or len(secret) < _MIN_LEN:
            continue
        with _known_lock:
            if secret in _known:
                continue
            _known.add(secret)
        if _airflow_mask_secret is not None:
            try:
                _airflow_mask_secret(secret)
            except Exception:  # pragma: no cover - masking must never break a token call
                logging.getLogger(__name__).debug("mask_secret failed", exc_info=False)


_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]+")
# Values of secret-bearing fields in JSON, dict reprs, form bodies and query strings, even ones we have
# not seen yet (a token response is logged by requests_oauthlib before we can register its tokens).
_SEP_VALUE = r"""(?P<sep>["']?\s*[:=]\s*["']?)(?P<value>[^"'&\s,;}<]+)"""
_SECRET_FIELD = re.compile(r"(?P<key>\b(?:access_token|refresh_token|client_secret|password))" + _SEP_VALUE, re.I)
# ``code=`` is the authorization code only in OAuth redirects and token requests; in API errors it is
# a field such as ``Code: 1001`` that the user needs to see.
_OAUTH_FIELD = re.compile(r"(?P<key>\b(?:access_token|refresh_token|client_secret|password|code))" + _SEP_VALUE, re.I)


def redact(text: str, secrets: Iterable[str | None] = (), *, oauth: bool = False) -> str:
    """``text`` without registered or given secrets, bearer tokens and secret field values.

    ``oauth=True`` (token endpoint answers, OAuth redirects, oauthlib logs) also hides ``code=`` values.
    """
    with _known_lock:
        known = set(_known)
    known.update(s for s in secrets if isinstance(s, str) and len(s) >= _MIN_LEN)
    for secret in sorted(known, key=len, reverse=True):
        for variant in {secret, quote(secret, safe=""), quote_plus(secret)}:
            if variant in text:
                text = text.replace(variant, "***")
    text = _BEARER.sub(r"\1***", text)
    pattern = _OAUTH_FIELD if oauth else _SECRET_FIELD
    return pattern.sub(lambda m: f"{m.group('key')}{m.group('sep')}***", text)


class RedactingFilter(logging.Filter):
    """Replaces any registered secret in a record's message with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = redact(message, oauth=True)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


_FILTER = RedactingFilter()
# Logger filters are not inherited, so attach to the loggers that actually emit token material.
for _name in ("requests_oauthlib.oauth2_session", "oauthlib.oauth2.rfc6749", "urllib3.connectionpool"):
    _logger = logging.getLogger(_name)
    if _FILTER not in _logger.filters:
        _logger.addFilter(_FILTER)
