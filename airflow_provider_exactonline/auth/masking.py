"""Mask tokens and secrets the moment we see them.

Two layers: Airflow's secrets masker (task logs, UI) via ``mask_secret``, and a redacting filter on
the ``requests_oauthlib`` logger, which at DEBUG level prints token request bodies and responses
(refresh token, client secret) into any handler, including ones Airflow's masker does not wrap.
"""

from __future__ import annotations

import logging
import re
import threading
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


# Values of token-bearing fields in JSON, dict reprs and form bodies, even ones we have not seen yet
# (a token response is logged by requests_oauthlib before we can register its tokens).
_FIELD_VALUE = re.compile(
    r"""(?P<key>access_token|refresh_token|client_secret|\bcode)(?P<sep>["']?\s*[:=]\s*["']?)(?P<value>[^"'&\s,}]+)""",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        for variant in {secret, quote(secret, safe=""), quote_plus(secret)}:
            if variant in text:
                text = text.replace(variant, "***")
    return _FIELD_VALUE.sub(lambda m: f"{m.group('key')}{m.group('sep')}***", text)


class RedactingFilter(logging.Filter):
    """Replaces any registered secret in a record's message with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = redact(message)
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
